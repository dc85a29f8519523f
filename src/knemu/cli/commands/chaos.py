"""``knemu chaos``: break nodes on purpose, then watch endpoints and traffic recover.

Two kinds of chaos:

* **Process chaos** acts on whatever runs a node or a control-plane component: under docker
  compose the container (``kill-node`` = SIGKILL the container, ``stop-node``/``start-node`` =
  freeze/thaw it with the cgroup freezer, ``restart``), under Docker Swarm the node's task
  (``chaos_swarm``, which adds ``drain-host``), on a local cluster (``knemu up``) the
  component's process group.  A node's container is found through the identity it registered
  with (label ``knemu.dev/identity`` on its Node object: the container's hostname).
* **Network chaos** is applied by the node's own agent on its underlay traffic (no kernel ``tc``):
  ``partition``, ``delay``, ``loss``, ``duplicate``, ``corrupt``, ``rate``.  Impairments stack per
  link (each command adds one; ``heal`` removes them), are seeded, and are sent to the agent through
  the api-server (``POST /api/v1/nodes/NODE/proxy/chaos``), as kubectl reaches a kubelet.

Each command prints what it did, one line per action.
"""

from __future__ import annotations

import argparse
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from knemu.cli.client import ApiClient, resolve_kind
from knemu.cli.commands import chaos_swarm
from knemu.errors import LocalError, RemoteError

IMPAIRMENTS: dict[str, tuple[str, str]] = {
    # command: (spec field, help)
    "delay": ("delay_ms", "add latency (milliseconds) to the node's underlay traffic"),
    "loss": ("loss_pct", "drop this percentage of the node's underlay datagrams"),
    "duplicate": ("duplicate_pct", "duplicate this percentage of datagrams"),
    "corrupt": ("corrupt_pct", "flip a byte in this percentage of datagrams"),
    "rate": ("rate_kbit", "limit the node's underlay to this many kbit/s"),
}


class Runtime(Protocol):
    """Whatever runs the cluster's processes."""

    def kill(self, target: str) -> str: ...
    def stop(self, target: str) -> str: ...
    def start(self, target: str) -> str: ...
    def restart(self, target: str) -> str: ...


# -- docker compose ------------------------------------------------------------------------


class DockerRuntime:
    """Containers of a knemu compose project, found through the docker SDK."""

    def __init__(self, client: ApiClient, project: str = "") -> None:
        try:
            import docker
        except ImportError:  # pragma: no cover - docker is a dependency of the chaos extra
            raise LocalError(
                "knemu chaos needs the docker SDK: pip install 'knemu[chaos]'"
            ) from None
        self.api = client
        self.project = project
        try:
            self.docker = docker.from_env()
            self.docker.ping()
        except Exception as exc:
            raise RemoteError(
                f"cannot reach the docker engine ({exc}); is docker running?"
            ) from None

    def _node_container(self, node: str) -> Any:
        obj = self.api.get(resolve_kind("nodes"), None, node)
        meta = obj["metadata"]
        # The raw identity is in the annotation (a label holds only identities that are valid
        # label values).
        identity = meta.get("annotations", {}).get("knemu.dev/identity") or meta.get(
            "labels", {}
        ).get("knemu.dev/identity", "")
        if identity:
            for c in self.docker.containers.list(
                all=True, filters={"label": "com.docker.compose.service=node"}
            ):
                if identity in (c.attrs["Config"]["Hostname"], c.id, c.name):
                    return c
        raise LocalError(
            f"no container runs node {node} (identity {identity!r}); is this a compose cluster? "
            "for a local cluster use --runtime local"
        )

    def _service_container(self, service: str) -> Any:
        """The container of a control-plane service, found from docker alone: the api-server
        may be the thing that is down."""
        found = self.docker.containers.list(
            all=True, filters={"label": f"com.docker.compose.service={service}"}
        )
        by_project = {c.labels.get("com.docker.compose.project", ""): c for c in found}
        if self.project:
            if self.project not in by_project:
                raise LocalError(f"compose project {self.project!r} has no {service} container")
            return by_project[self.project]
        if len(by_project) != 1:
            raise LocalError(
                f"found {service} containers in projects {sorted(by_project) or 'none'}; "
                "name one with --project (or COMPOSE_PROJECT_NAME)"
            )
        return next(iter(by_project.values()))

    def _container(self, target: str) -> Any:
        if target in ("apiserver", "dns"):
            return self._service_container(target)
        return self._node_container(target)

    def kill(self, target: str) -> str:
        c = self._container(target)
        c.kill(signal="SIGKILL")
        return f"{target}: container {c.name} killed (SIGKILL)"

    def stop(self, target: str) -> str:
        c = self._container(target)
        c.pause()
        return f"{target}: container {c.name} frozen (docker pause)"

    def start(self, target: str) -> str:
        c = self._container(target)
        c.reload()
        if c.status == "paused":
            c.unpause()
            return f"{target}: container {c.name} thawed"
        c.start()
        return f"{target}: container {c.name} started"

    def restart(self, target: str) -> str:
        c = self._container(target)
        c.restart(timeout=5)
        return f"{target}: container {c.name} restarted"


# -- local cluster (knemu up) -----------------------------------------------------------------


class LocalRuntime:
    """Process groups of a `knemu up` cluster, from its state file."""

    def __init__(self, name: str, state_root: str) -> None:
        from knemu.cli.commands import local

        self.local = local
        self.state_dir = Path(state_root) / f"cluster-{name}"
        state = local.load_state_dir(self.state_dir)
        if state is None:
            raise LocalError(
                f"no local cluster {name!r} under {state_root}; start one with knemu up"
            )
        self.state = state

    def _pid(self, target: str) -> int:
        pids: dict[str, int] = self.state.get("pids", {})
        if target not in pids:
            raise LocalError(
                f"{target} is not part of this cluster; known: {', '.join(sorted(pids))}"
            )
        return pids[target]

    def _signal(self, target: str, sig: signal.Signals) -> None:
        try:
            os.killpg(self._pid(target), sig)
        except ProcessLookupError:
            raise LocalError(f"{target} is not running (pid {self._pid(target)})") from None

    def kill(self, target: str) -> str:
        self._signal(target, signal.SIGKILL)
        self.local.kill_namespace_processes(self.state_dir, target)
        return f"{target}: process group {self._pid(target)} killed (SIGKILL)"

    def stop(self, target: str) -> str:
        self._signal(target, signal.SIGSTOP)
        self.local.signal_pod_processes(self.state_dir, target, signal.SIGSTOP)  # as docker pause
        return f"{target}: process group {self._pid(target)} and its pods frozen (SIGSTOP)"

    def start(self, target: str) -> str:
        try:
            self.local.signal_pod_processes(self.state_dir, target, signal.SIGCONT)
            self._signal(target, signal.SIGCONT)
            return f"{target}: process group {self._pid(target)} thawed (SIGCONT)"
        except LocalError:
            pid = self.local.restart_component(self.state_dir, target)
            return f"{target}: started again (pid {pid})"

    def restart(self, target: str) -> str:
        try:
            self._signal(target, signal.SIGTERM)
        except LocalError:
            pass
        pid = self.local.restart_component(self.state_dir, target)
        return f"{target}: restarted (pid {pid})"


# -- commands ---------------------------------------------------------------------------------


def _runtime(args: argparse.Namespace) -> Runtime:
    kind = args.runtime
    project = args.project or os.environ.get("COMPOSE_PROJECT_NAME", "")
    if kind == "auto":
        kind = (
            "local"
            if (Path(args.state_dir) / f"cluster-{args.cluster}" / "state.json").exists()
            else "docker"
        )
        if kind == "docker" and not project and chaos_swarm.is_swarm_stack(args.stack):
            kind = "swarm"
    if kind == "local":
        return LocalRuntime(args.cluster, args.state_dir)
    if kind == "swarm":
        return chaos_swarm.runtime_from_args(args)
    return DockerRuntime(args.client, project)


def _nodes(client: ApiClient) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.list(resolve_kind("nodes"), None).get("items", [])
    return items


def _post_impairment(client: ApiClient, node: str, spec: dict[str, Any]) -> str:
    reply = client.request("POST", f"/api/v1/nodes/{node}/proxy/chaos", body=spec)
    ident = reply.get("id", "?") if isinstance(reply, dict) else "?"
    what = ", ".join(f"{k}={v}" for k, v in spec.items() if k not in ("direction",))
    return f"{node}: impairment {ident} added ({what}, direction {spec.get('direction', 'both')})"


def _peers(args: argparse.Namespace) -> list[str]:
    return list(getattr(args, "peers", None) or [""])


def run_partition(args: argparse.Namespace) -> list[str]:
    lines = []
    for peer in _peers(args):
        spec = {"partition": True, "peer": peer, "direction": "both"}
        lines.append(_post_impairment(args.client, args.node, spec))
    return lines


def run_impairment(args: argparse.Namespace) -> list[str]:
    field_name = IMPAIRMENTS[args.chaos_command][0]
    lines = []
    for peer in _peers(args):
        spec: dict[str, Any] = {field_name: args.value, "peer": peer, "direction": args.direction}
        if args.chaos_command == "delay" and args.jitter:
            spec["jitter_ms"] = args.jitter
        lines.append(_post_impairment(args.client, args.node, spec))
    return lines


def run_heal(args: argparse.Namespace) -> list[str]:
    nodes = [args.node] if args.node else [n["metadata"]["name"] for n in _nodes(args.client)]
    lines = []
    for node in nodes:
        try:
            reply = args.client.request("DELETE", f"/api/v1/nodes/{node}/proxy/chaos")
        except (RemoteError, LocalError) as exc:
            lines.append(f"{node}: not healed ({exc.message})")
            continue
        removed = reply.get("removed", "?") if isinstance(reply, dict) else "?"
        lines.append(f"{node}: healed ({removed} impairments removed)")
    return lines


def _process_command(action: str) -> Callable[[argparse.Namespace], list[str]]:
    def run(args: argparse.Namespace) -> list[str]:
        runtime = _runtime(args)
        return [getattr(runtime, action)(args.node)]

    return run


HANDLERS: dict[str, Callable[[argparse.Namespace], list[str]]] = {
    "kill-node": _process_command("kill"),
    "stop-node": _process_command("stop"),
    "start-node": _process_command("start"),
    "restart": _process_command("restart"),
    "partition": run_partition,
    "heal": run_heal,
    **{name: run_impairment for name in IMPAIRMENTS},
    **chaos_swarm.HANDLERS,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runtime",
        choices=("auto", "docker", "local", "swarm"),
        default="auto",
        help="what runs the cluster (auto: a local `knemu up` state, else a swarm stack "
        "--stack on this manager, else docker compose)",
    )
    parser.add_argument("--cluster", default="knemu", help="local cluster name (knemu up --name)")
    parser.add_argument(
        "--project", default="", help="docker compose project (default: the only one)"
    )
    parser.add_argument("--state-dir", default="/run/knemu", help="local clusters' state root")
    sub = parser.add_subparsers(dest="chaos_command", required=True, metavar="CHAOS")
    chaos_swarm.add_arguments(parser, sub)
    for name, help_text in (
        ("kill-node", "SIGKILL a node (its container, or its processes and pods)"),
        ("stop-node", "freeze a node (docker pause / SIGSTOP)"),
        ("start-node", "thaw or start a node again"),
    ):
        sub.add_parser(name, help=help_text).add_argument("node")
    sub.add_parser("restart", help="restart apiserver, dns or a node").add_argument(
        "node", metavar="TARGET"
    )
    p = sub.add_parser(
        "partition", help="cut a node's underlay from all peers or from --from peers"
    )
    p.add_argument("node")
    p.add_argument("--from", dest="peers", action="append", metavar="NODE")
    for name, (spec_field, help_text) in IMPAIRMENTS.items():
        p = sub.add_parser(name, help=help_text)
        p.add_argument("node")
        p.add_argument("value", type=float, metavar=spec_field.split("_")[-1].upper())
        p.add_argument(
            "--peer",
            dest="peers",
            action="append",
            metavar="NODE",
            help="only traffic with this peer (repeatable; default every peer)",
        )
        p.add_argument("--direction", choices=("egress", "ingress", "both"), default="egress")
        if name == "delay":
            p.add_argument("--jitter", type=float, default=0.0, metavar="MS")
    sub.add_parser("heal", help="remove impairments (of one node, or all)").add_argument(
        "node", nargs="?"
    )


def run(args: argparse.Namespace) -> int:
    for line in HANDLERS[args.chaos_command](args):
        print(line)
    return 0
