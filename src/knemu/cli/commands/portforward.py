"""``knemu port-forward TYPE/NAME [LOCAL:]REMOTE...``: ``kubectl port-forward`` for knemu.

The target is a pod, or a service or deployment/replicaset, for which one ready pod its
selector picks is used (as kubectl does, once, at start).  For a service, REMOTE is a service
port (number or name), forwarded to the pod's targetPort; for a pod, REMOTE may also name a
container port.  Each ``LOCAL`` listens on ``--address`` (default 127.0.0.1 only) and every
connection accepted there gets its own websocket to the api-server's
``pods/{name}/portforward`` (framing in ``knemu.portforward_frames``); the I/O is in
``knemu.cli.commands.portforward_session``.  It runs until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
from dataclasses import dataclass

from knemu.cli.client import ApiClient, Obj, resolve_kind
from knemu.errors import LocalError

__all__ = ["PortSpec", "parse_addresses", "parse_port_spec", "pick_pod", "port_forward_run"]

_SELECTING = {"Service", "Deployment", "ReplicaSet"}


def port_forward_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="pod/NAME (or NAME), svc/NAME, deploy/NAME or rs/NAME")
    parser.add_argument(
        "ports", nargs="+", metavar="[LOCAL:]REMOTE", help="LOCAL empty (:REMOTE): a free port"
    )
    parser.add_argument(
        "--address",
        default="127.0.0.1",
        help="addresses to listen on, comma-separated (default 127.0.0.1; localhost, or IPs)",
    )


@dataclass(frozen=True)
class PortSpec:
    local: int  # 0: any free port
    remote: str  # a number or a port name


def parse_port_spec(spec: str) -> PortSpec:
    """``8080`` (the same both sides), ``8080:80``, ``:80`` (a free local port)."""
    local, _, remote = spec.rpartition(":") if ":" in spec else (spec, ":", spec)
    if not remote:
        raise LocalError(f"port-forward: {spec!r} has no remote port; write [LOCAL:]REMOTE")
    if local == "":
        local = "0"
    if not local.isdigit() or not 0 <= int(local) <= 65535:
        raise LocalError(f"port-forward: local port {local!r} of {spec!r} is not 0-65535")
    if remote.isdigit() and not 1 <= int(remote) <= 65535:
        raise LocalError(f"port-forward: remote port {remote!r} of {spec!r} is not 1-65535")
    return PortSpec(int(local), remote)


def parse_addresses(value: str) -> list[str]:
    """Listen addresses: IPs, or ``localhost`` (127.0.0.1); never more than asked for."""
    out: list[str] = []
    for part in (p.strip() for p in value.split(",")):
        addr = "127.0.0.1" if part == "localhost" else part
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            raise LocalError(
                f"port-forward: --address {part!r} is not an IP address or localhost"
            ) from None
        if addr not in out:
            out.append(addr)
    return out


def _ready(pod: Obj) -> bool:
    status = pod.get("status") or {}
    conditions = status.get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    return status.get("phase") == "Running" and ready


def pick_pod(pods: list[Obj], what: str, selector: str) -> Obj:
    """The ready pod to use (the first by name, so a rerun picks the same one)."""
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    ready = sorted((p for p in live if _ready(p)), key=lambda p: p["metadata"]["name"])
    if not ready:
        raise LocalError(
            f"{what} selects no ready pod (selector {selector}, {len(live)} pod(s) match); "
            f"see `knemu get pods -l {selector}`"
        )
    return ready[0]


def container_port(pod: Obj, name: str) -> int:
    """A container port of the pod by name (kubectl accepts names for REMOTE)."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == name and port.get("containerPort"):
                return int(port["containerPort"])
    raise LocalError(f"pod {pod['metadata']['name']} has no container port named {name!r}")


def pod_port(pod: Obj, remote: str) -> int:
    return int(remote) if remote.isdigit() else container_port(pod, remote)


def service_target(service: Obj, pod: Obj, remote: str) -> int:
    """The pod port a service port (number or name) forwards to: its targetPort."""
    name = service["metadata"]["name"]
    for port in (service.get("spec") or {}).get("ports") or []:
        if str(port.get("port")) == remote or port.get("name") == remote:
            target = port.get("targetPort", port.get("port"))
            return int(target) if str(target).isdigit() else container_port(pod, str(target))
    raise LocalError(
        f"service {name} does not have a service port {remote}; see `knemu get svc {name}`"
    )


def _selector(obj: Obj) -> str:
    spec = obj.get("spec") or {}
    labels = spec.get("selector") or {}
    if obj["kind"] != "Service":
        if labels.get("matchExpressions"):
            raise LocalError(
                f"{obj['kind'].lower()} {obj['metadata']['name']}: knemu port-forward "
                "follows selector.matchLabels only; forward to one of its pods instead"
            )
        labels = labels.get("matchLabels") or {}
    if not labels:
        raise LocalError(f"{obj['kind'].lower()} {obj['metadata']['name']} has no selector")
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def resolve(
    client: ApiClient, namespace: str, target: str, specs: list[PortSpec]
) -> tuple[str, list[int]]:
    """The pod to forward to and the pod port of each spec."""
    kind, _, name = target.rpartition("/")
    rt = resolve_kind(kind or "pods")
    if rt.kind != "Pod" and rt.kind not in _SELECTING:
        raise LocalError(
            f"cannot port-forward to a {rt.kind}: give pod/NAME, svc/NAME, deploy/NAME or rs/NAME"
        )
    obj = client.get(rt, namespace, name)
    obj.setdefault("kind", rt.kind)
    if rt.kind == "Pod":
        pod = obj
    else:
        selector = _selector(obj)
        pods = client.list(resolve_kind("pods"), namespace, label_selector=selector)
        pod = pick_pod(pods.get("items") or [], f"{rt.kind.lower()} {name}", selector)
    phase = (pod.get("status") or {}).get("phase")
    if phase != "Running":
        raise LocalError(
            f"unable to forward port because pod is not running. Current status={phase}"
        )
    if rt.kind == "Service":
        return pod["metadata"]["name"], [service_target(obj, pod, s.remote) for s in specs]
    return pod["metadata"]["name"], [pod_port(pod, s.remote) for s in specs]


def port_forward_run(args: argparse.Namespace) -> int:
    from knemu.cli.commands.portforward_session import Listener, forward

    client: ApiClient = args.client
    namespace = args.namespace or "default"
    specs = [parse_port_spec(s) for s in args.ports]
    addresses = parse_addresses(args.address)
    pod, remotes = resolve(client, namespace, args.target, specs)
    listeners = [Listener(s.local, r) for s, r in zip(specs, remotes, strict=True)]
    url = f"{client.server}/api/v1/namespaces/{namespace}/pods/{pod}/portforward"
    return asyncio.run(forward(client, url, addresses, listeners))
