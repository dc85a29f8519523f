"""``knemu describe KIND NAME``: the human-readable view of ``kubectl describe``.

Layouts follow kubectl's describers (k8s.io/kubectl pkg/describe/describe.go): ``Label:\\tvalue``
lines aligned like Go's tabwriter with padding 2 (a line without a tab ends an aligned block),
nested sections indented by two spaces per level, and the object's events last.  A service's
``Endpoints:`` line lists ``ip:port`` for every address serving each service port, read from
the Endpoints object (or its EndpointSlices), as in seed 003.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import yaml

from knemu.cli.apply import LAST_APPLIED
from knemu.cli.client import ApiClient, Obj, ResourceType, StatusError, resolve_kind
from knemu.cli.printers import age_of, endpoints_addresses, node_status, parse_time, pod_status

NONE = "<none>"


class Writer:
    """Collects ``(level, cells)`` lines and aligns them like Go's tabwriter (padding 2)."""

    def __init__(self) -> None:
        self.lines: list[list[str]] = []

    def line(self, level: int, *cells: Any) -> None:
        texts = [str(c) for c in cells] or [""]
        texts[0] = "  " * level + texts[0]
        self.lines.append(texts)

    def render(self, padding: int = 2) -> str:
        widths: list[dict[int, int]] = [{} for _ in self.lines]
        self._format(0, len(self.lines), 0, widths, padding)
        out = []
        for cells, w in zip(self.lines, widths, strict=True):
            padded = [c.ljust(w.get(i, 0)) for i, c in enumerate(cells[:-1])]
            out.append("".join([*padded, cells[-1]]))
        return "\n".join(out) + "\n"

    def _format(
        self, start: int, end: int, col: int, widths: list[dict[int, int]], pad: int
    ) -> None:
        i = start
        while i < end:
            if len(self.lines[i]) - 1 <= col:  # no tab-terminated cell in this column
                i += 1
                continue
            j = i
            while j < end and len(self.lines[j]) - 1 > col:
                j += 1
            width = max(len(self.lines[k][col]) + pad for k in range(i, j))
            for k in range(i, j):
                widths[k][col] = width
            self._format(i, j, col + 1, widths, pad)
            i = j


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", help="service, pod, node, deployment, ... or TYPE/NAME")
    parser.add_argument("names", nargs="*", help="object names (default: all of that kind)")
    parser.add_argument("-l", "--selector", default="", help="label selector")


def run(args: argparse.Namespace) -> int:
    client: ApiClient = args.client
    kind, _, name = args.kind.partition("/")
    rt = resolve_kind(kind)
    names = ([name] if name else []) + list(args.names)
    namespace = args.namespace or "default"
    missing = []
    if names:
        found = [(n, client.find(rt, namespace, n)) for n in names]
        objs = [obj for _, obj in found if obj is not None]
        missing = [n for n, obj in found if obj is None]
    else:
        objs = list(client.list(rt, namespace, args.selector).get("items") or [])
        if not objs:
            print(f"No resources found in {namespace} namespace.", file=sys.stderr)
    now = time.time()
    texts = [describe(client, rt, obj, now) for obj in objs]
    sys.stdout.write("\n\n".join(t.rstrip("\n") for t in texts) + ("\n" if texts else ""))
    for name in missing:
        print(f'Error from server (NotFound): {rt.plural} "{name}" not found', file=sys.stderr)
    return 1 if missing else 0


def describe(client: ApiClient, rt: ResourceType, obj: Obj, now: float) -> str:
    w = Writer()
    _DESCRIBERS.get(rt.kind, _describe_generic)(client, obj, w, now)
    _events(client, obj, w, now)
    return w.render()


# -- shared sections --------------------------------------------------------------------------


def _map_lines(w: Writer, level: int, title: str, values: dict[str, str] | None, sep: str) -> None:
    items = sorted((values or {}).items())
    if not items:
        w.line(level, f"{title}:", NONE)
        return
    for i, (k, v) in enumerate(items):
        w.line(level, f"{title}:" if i == 0 else "", f"{k}{sep}{v}")


def _header(w: Writer, obj: Obj, namespaced: bool = True) -> None:
    meta = obj.get("metadata") or {}
    w.line(0, "Name:", meta.get("name", ""))
    if namespaced:
        w.line(0, "Namespace:", meta.get("namespace", ""))
    _map_lines(w, 0, "Labels", meta.get("labels"), "=")
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != LAST_APPLIED}
    _map_lines(w, 0, "Annotations", annotations, ": ")


def rfc1123(stamp: str | None) -> str:
    t = parse_time(stamp)
    if t is None:
        return NONE
    return datetime.fromtimestamp(t, UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")


def _events(client: ApiClient, obj: Obj, w: Writer, now: float) -> None:
    meta = obj.get("metadata") or {}
    involved = f"involvedObject.kind={obj.get('kind')},involvedObject.name={meta.get('name')}"
    try:
        events = client.list(
            resolve_kind("events"), meta.get("namespace") or "default", field_selector=involved
        ).get("items")
    except StatusError:
        events = None
    if not events:
        w.line(0, "Events:", NONE)
        return
    w.line(0, "Events:")
    w.line(1, "Type", "Reason", "Age", "From", "Message")
    w.line(1, "----", "------", "----", "----", "-------")
    for ev in sorted(events, key=lambda e: str(e.get("lastTimestamp") or "")):
        w.line(
            1,
            ev.get("type", "Normal"),
            ev.get("reason", ""),
            _event_age(ev, now),
            _event_source(ev),
            ev.get("message", ""),
        )


def _event_age(ev: Obj, now: float) -> str:
    last = age_of(ev.get("lastTimestamp") or ev.get("eventTime"), now)
    count = int(ev.get("count") or 1)
    if count > 1 and ev.get("firstTimestamp"):
        return f"{last} (x{count} over {age_of(ev['firstTimestamp'], now)})"
    return last


def _event_source(ev: Obj) -> str:
    source = ev.get("source") or {}
    parts = [source.get("component") or ev.get("reportingComponent") or "", source.get("host")]
    return ", ".join(p for p in parts if p)


# -- per kind ---------------------------------------------------------------------------------


def _service_endpoints(client: ApiClient, svc: Obj) -> Callable[[str], str]:
    """port name -> ``ip:port,...`` from the Endpoints object, else the EndpointSlices."""
    meta = svc["metadata"]
    ns, name = meta.get("namespace", "default"), meta["name"]
    ep = client.find(resolve_kind("endpoints"), ns, name)
    if ep is not None:
        return lambda port: endpoints_addresses(ep, {port}, limit=0)
    slices = (
        client.list(resolve_kind("endpointslices"), ns, f"kubernetes.io/service-name={name}").get(
            "items"
        )
        or []
    )

    def from_slices(port_name: str) -> str:
        items = []
        for es in slices:
            ports = [p for p in es.get("ports") or [] if (p.get("name") or "") == port_name]
            ready = [
                e
                for e in es.get("endpoints") or []
                if (e.get("conditions") or {}).get("ready", True)
            ]
            items += [
                f"{a}:{p.get('port')}"
                for p in ports
                for e in ready
                for a in e.get("addresses") or []
            ]
        return ",".join(items) or NONE

    return from_slices


def _describe_service(client: ApiClient, svc: Obj, w: Writer, now: float) -> None:
    spec, status = svc.get("spec") or {}, svc.get("status") or {}
    _header(w, svc)
    w.line(
        0,
        "Selector:",
        ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items())) or NONE,
    )
    kind = spec.get("type") or "ClusterIP"
    w.line(0, "Type:", kind)
    if spec.get("ipFamilyPolicy"):
        w.line(0, "IP Family Policy:", spec["ipFamilyPolicy"])
    if spec.get("ipFamilies"):
        w.line(0, "IP Families:", ",".join(spec["ipFamilies"]))
    w.line(0, "IP:", spec.get("clusterIP") or NONE)
    w.line(0, "IPs:", ",".join(spec.get("clusterIPs") or [spec.get("clusterIP") or NONE]))
    if kind == "ExternalName":
        w.line(0, "External Name:", spec.get("externalName", ""))
    ingress = (status.get("loadBalancer") or {}).get("ingress") or []
    if ingress:
        w.line(
            0,
            "LoadBalancer Ingress:",
            ", ".join(i.get("ip") or i.get("hostname", "") for i in ingress),
        )
    endpoints = _service_endpoints(client, svc)
    for port in spec.get("ports") or []:
        name, proto = port.get("name") or "<unset>", port.get("protocol") or "TCP"
        w.line(0, "Port:", name, f"{port.get('port')}/{proto}")
        w.line(0, "TargetPort:", f"{port.get('targetPort', port.get('port'))}/{proto}")
        if port.get("nodePort"):
            w.line(0, "NodePort:", name, f"{port['nodePort']}/{proto}")
        w.line(0, "Endpoints:", endpoints(port.get("name") or ""))
    w.line(0, "Session Affinity:", spec.get("sessionAffinity") or "None")
    if kind in ("NodePort", "LoadBalancer"):
        w.line(0, "External Traffic Policy:", spec.get("externalTrafficPolicy") or "Cluster")


def _container_state(state: Obj, w: Writer) -> None:
    for name, title in (
        ("running", "Running"),
        ("waiting", "Waiting"),
        ("terminated", "Terminated"),
    ):
        if name in state:
            detail = state[name] or {}
            w.line(2, "State:", title)
            if detail.get("reason"):
                w.line(3, "Reason:", detail["reason"])
            if detail.get("message"):
                w.line(3, "Message:", detail["message"])
            if name == "terminated":
                w.line(3, "Exit Code:", detail.get("exitCode", 0))
            if detail.get("startedAt"):
                w.line(3, "Started:", rfc1123(detail["startedAt"]))
            if detail.get("finishedAt"):
                w.line(3, "Finished:", rfc1123(detail["finishedAt"]))
            return
    w.line(2, "State:", "Waiting")


def _describe_containers(pod: Obj, w: Writer) -> None:
    statuses = {s.get("name"): s for s in (pod.get("status") or {}).get("containerStatuses") or []}
    w.line(0, "Containers:")
    for c in (pod.get("spec") or {}).get("containers") or []:
        cs = statuses.get(c.get("name")) or {}
        w.line(1, f"{c.get('name')}:")
        w.line(2, "Image:", c.get("image", ""))
        ports = c.get("ports") or []
        port_text = ", ".join(
            f"{p.get('containerPort')}/{p.get('protocol') or 'TCP'}" for p in ports
        )
        w.line(2, "Port:" if len(ports) <= 1 else "Ports:", port_text or NONE)
        if c.get("command"):
            w.line(2, "Command:", " ".join(c["command"]))
        if c.get("args"):
            w.line(2, "Args:", " ".join(c["args"]))
        _container_state(cs.get("state") or {}, w)
        w.line(2, "Ready:", "True" if cs.get("ready") else "False")
        w.line(2, "Restart Count:", cs.get("restartCount", 0))
        env = c.get("env") or []
        if not env:
            w.line(2, "Environment:", NONE)
        else:
            w.line(2, "Environment:")
            for e in env:
                w.line(3, f"{e.get('name')}:", e.get("value", ""))


def _conditions(w: Writer, conditions: list[Obj]) -> None:
    if not conditions:
        return
    w.line(0, "Conditions:")
    w.line(1, "Type", "Status")
    for c in conditions:
        w.line(1, c.get("type", ""), c.get("status", ""))


def _describe_pod(client: ApiClient, pod: Obj, w: Writer, now: float) -> None:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    meta = pod.get("metadata") or {}
    w.line(0, "Name:", meta.get("name", ""))
    w.line(0, "Namespace:", meta.get("namespace", ""))
    node = spec.get("nodeName")
    w.line(0, "Node:", f"{node}/{status.get('hostIP', '')}" if node else NONE)
    if status.get("startTime"):
        w.line(0, "Start Time:", rfc1123(status["startTime"]))
    _map_lines(w, 0, "Labels", meta.get("labels"), "=")
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != LAST_APPLIED}
    _map_lines(w, 0, "Annotations", annotations, ": ")
    w.line(
        0,
        "Status:",
        pod_status(pod)[0] if meta.get("deletionTimestamp") else status.get("phase", "Pending"),
    )
    for key, title in (("reason", "Reason:"), ("message", "Message:")):
        if status.get(key):
            w.line(0, title, status[key])
    w.line(0, "IP:", status.get("podIP", ""))
    ips = status.get("podIPs") or ([{"ip": status["podIP"]}] if status.get("podIP") else [])
    w.line(0, "IPs:", *([] if ips else [NONE]))
    for ip in ips:
        w.line(1, "IP:", ip.get("ip", ""))
    owners = meta.get("ownerReferences") or []
    if owners:
        w.line(0, "Controlled By:", f"{owners[0].get('kind')}/{owners[0].get('name')}")
    _describe_containers(pod, w)
    _conditions(w, status.get("conditions") or [])


def _describe_node(client: ApiClient, node: Obj, w: Writer, now: float) -> None:
    spec, status = node.get("spec") or {}, node.get("status") or {}
    _header(w, node, namespaced=False)
    w.line(0, "CreationTimestamp:", rfc1123((node.get("metadata") or {}).get("creationTimestamp")))
    w.line(0, "Unschedulable:", "true" if spec.get("unschedulable") else "false")
    w.line(0, "Status:", node_status(node))
    conditions = status.get("conditions") or []
    if conditions:
        w.line(0, "Conditions:")
        w.line(1, "Type", "Status", "LastHeartbeatTime", "Reason", "Message")
        w.line(1, "----", "------", "-----------------", "------", "-------")
        for c in conditions:
            w.line(
                1,
                c.get("type", ""),
                c.get("status", ""),
                rfc1123(c.get("lastHeartbeatTime")),
                c.get("reason", ""),
                c.get("message", ""),
            )
    w.line(0, "Addresses:")
    for addr in status.get("addresses") or []:
        w.line(1, f"{addr.get('type')}:", addr.get("address", ""))
    w.line(0, "PodCIDR:", spec.get("podCIDR") or NONE)
    w.line(0, "PodCIDRs:", ",".join(spec.get("podCIDRs") or []) or spec.get("podCIDR") or NONE)
    pods = client.list(
        resolve_kind("pods"), None, field_selector=f"spec.nodeName={node['metadata']['name']}"
    )
    items = pods.get("items") or []
    w.line(0, "Non-terminated Pods:", f"({len(items)} in total)")
    if items:
        w.line(1, "Namespace", "Name", "Age")
        w.line(1, "---------", "----", "---")
        for p in items:
            m = p.get("metadata") or {}
            w.line(
                1,
                m.get("namespace", ""),
                m.get("name", ""),
                age_of(m.get("creationTimestamp"), now),
            )


def _describe_workload(client: ApiClient, obj: Obj, w: Writer, now: float) -> None:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    _header(w, obj)
    w.line(0, "CreationTimestamp:", rfc1123((obj.get("metadata") or {}).get("creationTimestamp")))
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    w.line(0, "Selector:", ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or NONE)
    desired, total = spec.get("replicas", 1), status.get("replicas") or 0
    available = status.get("availableReplicas") or 0
    if obj.get("kind") == "Deployment":
        w.line(
            0,
            "Replicas:",
            f"{desired} desired | {status.get('updatedReplicas') or 0} updated | "
            f"{total} total | {available} available | {max(total - available, 0)} unavailable",
        )
        w.line(0, "StrategyType:", (spec.get("strategy") or {}).get("type") or "RollingUpdate")
    else:
        w.line(0, "Replicas:", f"{total} current / {desired} desired")
    template = spec.get("template") or {}
    w.line(0, "Pod Template:")
    _map_lines(w, 1, "Labels", (template.get("metadata") or {}).get("labels"), "=")
    w.line(1, "Containers:")
    for c in (template.get("spec") or {}).get("containers") or []:
        w.line(2, f"{c.get('name')}:")
        w.line(3, "Image:", c.get("image", ""))
        ports = ", ".join(
            f"{p.get('containerPort')}/{p.get('protocol') or 'TCP'}" for p in c.get("ports") or []
        )
        w.line(3, "Port:", ports or NONE)
    _conditions(w, status.get("conditions") or [])


def _describe_generic(client: ApiClient, obj: Obj, w: Writer, now: float) -> None:
    _header(w, obj, namespaced=bool((obj.get("metadata") or {}).get("namespace")))
    for key in ("spec", "subsets", "endpoints", "ports", "status"):
        if obj.get(key):
            w.line(0, f"{key[0].upper()}{key[1:]}:")
            for text in yaml.safe_dump(obj[key], default_flow_style=False).splitlines():
                w.line(1, text)


_DESCRIBERS: dict[str, Callable[[ApiClient, Obj, Writer, float], None]] = {
    "Service": _describe_service,
    "Pod": _describe_pod,
    "Node": _describe_node,
    "Deployment": _describe_workload,
    "ReplicaSet": _describe_workload,
}
