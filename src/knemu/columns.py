"""kubectl's printer columns per kind, as pure functions: shared by the api-server's
server-side Table responses (``knemu.apiserver.rest.tables``) and the CLI's own tables
(``knemu.cli.output.printers``), so both print what a real cluster prints.

Column sets and cell formatting follow kubectl's built-in printers
(k8s.io/kubernetes pkg/printers/internalversion/printers.go); ``human_age`` is
apimachinery's ``duration.HumanDuration``; tables are aligned like Go's tabwriter with a
padding of 3, as ``kubectl get`` does.  Every function takes plain dicts and ``now`` (seconds
since the epoch) and returns text, so none of them touches the network or the clock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

Obj = dict[str, Any]
NONE = "<none>"


def human_age(seconds: float) -> str:
    """kubectl's age: 99s, 4m36s, 15m, 5h3m, 2d, 3y12d (apimachinery duration.HumanDuration)."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes, hours = s // 60, s // 3600
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    if days < 365 * 8:
        return f"{days // 365}y{days % 365}d" if days % 365 else f"{days // 365}y"
    return f"{days // 365}y"


def parse_time(stamp: str | None) -> float | None:
    """Seconds since the epoch of an RFC 3339 timestamp (``2023-07-16T07:42:00Z``)."""
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def age_of(stamp: str | None, now: float) -> str:
    t = parse_time(stamp)
    return "<unknown>" if t is None else human_age(now - t)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, 3 spaces apart, the last one unpadded (kubectl's tabwriter)."""
    table = [list(headers), *[list(r) for r in rows]] if headers else [list(r) for r in rows]
    if not table:
        return ""
    widths = [max(len(r[i]) for r in table if i < len(r)) for i in range(len(table[0]))]
    lines = []
    for row in table:
        cells = [c.ljust(widths[i] + 3) for i, c in enumerate(row[:-1])] + row[-1:]
        lines.append("".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def join_labels(labels: dict[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items())) or NONE


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _spec(obj: Obj) -> Obj:
    return obj.get("spec") or {}


def _status(obj: Obj) -> Obj:
    return obj.get("status") or {}


# -- rows per kind ----------------------------------------------------------------------------


def pod_status(pod: Obj) -> tuple[str, int, int, int]:
    """(STATUS, ready containers, containers, restarts) as kubectl's printPod computes them."""
    status = _status(pod)
    reason = status.get("reason") or status.get("phase") or "Pending"
    ready = restarts = 0
    running = False
    init_reason = _init_status(status)
    if init_reason:
        reason = init_reason
    for cs in [] if init_reason else reversed(status.get("containerStatuses") or []):
        restarts += int(cs.get("restartCount") or 0)
        state = cs.get("state") or {}
        waiting, terminated = state.get("waiting") or {}, state.get("terminated")
        if waiting.get("reason"):
            reason = waiting["reason"]
        elif terminated is not None:
            reason = terminated.get("reason") or _exit_reason(terminated)
        elif "running" in state and cs.get("ready"):
            running = True
            ready += 1
    if reason == "Completed" and running:
        reason = "Running"
    if _meta(pod).get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    total = len(_spec(pod).get("containers") or [])
    return reason, ready, total, restarts


def _init_status(status: Obj) -> str:
    """kubectl's ``Init:N/M``, ``Init:<reason>`` while init containers have not all succeeded."""
    inits = status.get("initContainerStatuses") or []
    for i, cs in enumerate(inits):
        state = cs.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting") or {}
        if terminated is not None and terminated.get("exitCode") == 0:
            continue
        if terminated is not None:
            return f"Init:{terminated.get('reason') or _exit_reason(terminated)}"
        if waiting.get("reason") and waiting["reason"] != "PodInitializing":
            return f"Init:{waiting['reason']}"
        return f"Init:{i}/{len(inits)}"
    return ""


def _exit_reason(terminated: Obj) -> str:
    if terminated.get("signal"):
        return f"Signal:{terminated['signal']}"
    return f"ExitCode:{terminated.get('exitCode', 0)}"


def _pod_row(pod: Obj, now: float, wide: bool) -> list[str]:
    reason, ready, total, restarts = pod_status(pod)
    row = [
        f"{ready}/{total}",
        reason,
        str(restarts),
        age_of(_meta(pod).get("creationTimestamp"), now),
    ]
    if wide:
        status, spec = _status(pod), _spec(pod)
        gates = spec.get("readinessGates") or []
        row += [
            status.get("podIP") or NONE,
            spec.get("nodeName") or NONE,
            status.get("nominatedNodeName") or NONE,
            ",".join(g.get("conditionType", "") for g in gates) or NONE,
        ]
    return row


def service_ports(svc: Obj) -> str:
    """``8080/TCP``, ``80:30008/TCP``, comma separated; ``<none>`` without ports."""
    parts = []
    for p in _spec(svc).get("ports") or []:
        proto = p.get("protocol") or "TCP"
        node_port = p.get("nodePort")
        parts.append(
            f"{p.get('port')}:{node_port}/{proto}" if node_port else f"{p.get('port')}/{proto}"
        )
    return ",".join(parts) or NONE


def service_external_ip(svc: Obj) -> str:
    """kubectl getServiceExternalIP: LoadBalancer without ingress is ``<pending>``."""
    spec = _spec(svc)
    kind = spec.get("type") or "ClusterIP"
    external = list(spec.get("externalIPs") or [])
    if kind == "ExternalName":
        return str(spec.get("externalName") or NONE)
    if kind == "LoadBalancer":
        ingress = (_status(svc).get("loadBalancer") or {}).get("ingress") or []
        addrs = [i.get("ip") or i.get("hostname") or "" for i in ingress] + external
        return ",".join(a for a in addrs if a) or "<pending>"
    return ",".join(external) or NONE


def _service_row(svc: Obj, now: float, wide: bool) -> list[str]:
    spec = _spec(svc)
    row = [
        spec.get("type") or "ClusterIP",
        spec.get("clusterIP") or NONE,
        service_external_ip(svc),
        service_ports(svc),
        age_of(_meta(svc).get("creationTimestamp"), now),
    ]
    if wide:
        row.append(join_labels(spec.get("selector")))
    return row


def _workload_wide(obj: Obj) -> list[str]:
    containers = ((_spec(obj).get("template") or {}).get("spec") or {}).get("containers") or []
    selector = (_spec(obj).get("selector") or {}).get("matchLabels")
    return [
        ",".join(c.get("name", "") for c in containers) or NONE,
        ",".join(c.get("image", "") for c in containers) or NONE,
        join_labels(selector),
    ]


def _deployment_row(dep: Obj, now: float, wide: bool) -> list[str]:
    spec, status = _spec(dep), _status(dep)
    row = [
        f"{status.get('readyReplicas') or 0}/{spec.get('replicas', 1)}",
        str(status.get("updatedReplicas") or 0),
        str(status.get("availableReplicas") or 0),
        age_of(_meta(dep).get("creationTimestamp"), now),
    ]
    return row + (_workload_wide(dep) if wide else [])


def _replicaset_row(rs: Obj, now: float, wide: bool) -> list[str]:
    spec, status = _spec(rs), _status(rs)
    row = [
        str(spec.get("replicas", 1)),
        str(status.get("replicas") or 0),
        str(status.get("readyReplicas") or 0),
        age_of(_meta(rs).get("creationTimestamp"), now),
    ]
    return row + (_workload_wide(rs) if wide else [])


def _daemonset_row(ds: Obj, now: float, wide: bool) -> list[str]:
    status = _status(ds)
    counts = ("desiredNumberScheduled", "currentNumberScheduled", "numberReady",
              "updatedNumberScheduled", "numberAvailable")  # fmt: skip
    selector = ((_spec(ds).get("template") or {}).get("spec") or {}).get("nodeSelector")
    row = [str(status.get(key) or 0) for key in counts]
    row += [join_labels(selector), age_of(_meta(ds).get("creationTimestamp"), now)]
    return row + (_workload_wide(ds) if wide else [])


def _controller_revision_row(cr: Obj, now: float, wide: bool) -> list[str]:
    """CONTROLLER as kubectl prints it: daemonset.apps/NAME."""
    refs = [r for r in _meta(cr).get("ownerReferences") or [] if r.get("controller")]
    owner = NONE
    if refs:
        group = str(refs[0].get("apiVersion", "")).rpartition("/")[0]
        kind = str(refs[0].get("kind", "")).lower()
        owner = f"{kind}{'.' + group if group else ''}/{refs[0].get('name', '')}"
    return [owner, str(cr.get("revision", 0)), age_of(_meta(cr).get("creationTimestamp"), now)]


def node_status(node: Obj) -> str:
    ready = "Unknown"
    for cond in _status(node).get("conditions") or []:
        if cond.get("type") == "Ready":
            ready = {"True": "Ready", "False": "NotReady"}.get(cond.get("status", ""), "Unknown")
    return ready + (",SchedulingDisabled" if _spec(node).get("unschedulable") else "")


def node_internal_ip(node: Obj) -> str:
    for addr in _status(node).get("addresses") or []:
        if addr.get("type") == "InternalIP":
            return str(addr.get("address"))
    return NONE


def _node_row(node: Obj, now: float, wide: bool) -> list[str]:
    labels = _meta(node).get("labels") or {}
    roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))
    if labels.get("kubernetes.io/role"):
        roles.append(labels["kubernetes.io/role"])
    info = _status(node).get("nodeInfo") or {}
    row = [
        node_status(node),
        ",".join(roles) or NONE,
        age_of(_meta(node).get("creationTimestamp"), now),
        info.get("kubeletVersion") or "",
    ]
    if wide:
        row += [
            node_internal_ip(node),
            NONE,
            info.get("osImage") or "<unknown>",
            info.get("kernelVersion") or "<unknown>",
            info.get("containerRuntimeVersion") or "<unknown>",
        ]
    return row


def _more(items: list[str], limit: int) -> str:
    if limit and len(items) > limit:
        return ",".join(items[:limit]) + f" + {len(items) - limit} more..."
    return ",".join(items)


def endpoints_addresses(ep: Obj, port_names: set[str] | None = None, limit: int = 3) -> str:
    """``ip:port,...`` of an Endpoints object (kubectl formatEndpoints); ``<none>`` if empty."""
    items: list[str] = []
    for subset in ep.get("subsets") or []:
        addrs = [a.get("ip", "") for a in subset.get("addresses") or []]
        ports = [
            p
            for p in subset.get("ports") or []
            if port_names is None or p.get("name", "") in port_names
        ]
        if not subset.get("ports"):
            items += addrs
        for port in ports:
            items += [f"{a}:{port.get('port')}" for a in addrs]
    return _more(items, limit) or NONE


def _endpoints_row(ep: Obj, now: float, wide: bool) -> list[str]:
    return [endpoints_addresses(ep), age_of(_meta(ep).get("creationTimestamp"), now)]


def _slice_row(es: Obj, now: float, wide: bool) -> list[str]:
    ports = [str(p.get("port")) for p in es.get("ports") or [] if p.get("port") is not None]
    addrs = [a for e in es.get("endpoints") or [] for a in e.get("addresses") or []]
    return [
        es.get("addressType") or "IPv4",
        ",".join(ports) or "<unset>",
        _more(addrs, 3) or "<unset>",
        age_of(_meta(es).get("creationTimestamp"), now),
    ]


def _namespace_row(ns: Obj, now: float, wide: bool) -> list[str]:
    return [_status(ns).get("phase") or "Active", age_of(_meta(ns).get("creationTimestamp"), now)]


def event_time(ev: Obj) -> str | None:
    return ev.get("lastTimestamp") or ev.get("eventTime") or _meta(ev).get("creationTimestamp")


def _event_row(ev: Obj, now: float, wide: bool) -> list[str]:
    involved = ev.get("involvedObject") or ev.get("regarding") or {}
    return [
        age_of(event_time(ev), now),
        ev.get("type") or "Normal",
        ev.get("reason") or "",
        f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
        ev.get("message") or ev.get("note") or "",
    ]


def _netpol_row(np: Obj, now: float, wide: bool) -> list[str]:
    selector = (_spec(np).get("podSelector") or {}).get("matchLabels")
    return [join_labels(selector), age_of(_meta(np).get("creationTimestamp"), now)]


def _ingress_row(ing: Obj, now: float, wide: bool) -> list[str]:
    """kubectl printIngress: hosts (``*`` for a rule without one; 3, then "+ N more..."),
    the load balancer's addresses, and ports 80 (and 443 with TLS)."""
    spec = _spec(ing)
    hosts = [r.get("host") or "*" for r in spec.get("rules") or []]
    shown = ",".join(hosts[:3]) + (f" + {len(hosts) - 3} more..." if len(hosts) > 3 else "")
    lb = (_status(ing).get("loadBalancer") or {}).get("ingress") or []
    address = ",".join(a for i in lb for a in (i.get("ip"), i.get("hostname")) if a)
    return [
        str(spec.get("ingressClassName") or NONE),
        shown or "*",
        address,
        "80, 443" if spec.get("tls") else "80",
        age_of(_meta(ing).get("creationTimestamp"), now),
    ]


def _ingress_class_row(ic: Obj, now: float, wide: bool) -> list[str]:
    """kubectl printIngressClass: PARAMETERS as Kind.apiGroup/name."""
    params = _spec(ic).get("parameters") or {}
    shown = NONE
    if params:
        group = f".{params['apiGroup']}" if params.get("apiGroup") else ""
        shown = f"{params.get('kind', '')}{group}/{params.get('name', '')}"
    return [
        str(_spec(ic).get("controller") or ""),
        shown,
        age_of(_meta(ic).get("creationTimestamp"), now),
    ]


def _data_count(obj: Obj) -> int:
    return len(obj.get("data") or {}) + len(obj.get("binaryData") or {})


def _config_map_row(cm: Obj, now: float, wide: bool) -> list[str]:
    return [str(_data_count(cm)), age_of(_meta(cm).get("creationTimestamp"), now)]


def _secret_row(secret: Obj, now: float, wide: bool) -> list[str]:
    return [
        str(secret.get("type") or "Opaque"),
        str(_data_count(secret)),
        age_of(_meta(secret).get("creationTimestamp"), now),
    ]


def _service_account_row(sa: Obj, now: float, wide: bool) -> list[str]:
    return [str(len(sa.get("secrets") or [])), age_of(_meta(sa).get("creationTimestamp"), now)]


def _lease_row(lease: Obj, now: float, wide: bool) -> list[str]:
    holder = _spec(lease).get("holderIdentity") or ""
    return [str(holder), age_of(_meta(lease).get("creationTimestamp"), now)]


def _replication_controller_row(rc: Obj, now: float, wide: bool) -> list[str]:
    row = _replicaset_row(rc, now, False)
    if not wide:
        return row
    containers = ((_spec(rc).get("template") or {}).get("spec") or {}).get("containers") or []
    names = ",".join(c.get("name", "") for c in containers) or NONE
    images = ",".join(c.get("image", "") for c in containers) or NONE
    return [*row, names, images, join_labels(_spec(rc).get("selector"))]


@dataclass(frozen=True)
class TableSpec:
    columns: tuple[str, ...]  # after NAME
    wide: tuple[str, ...]
    row: Callable[[Obj, float, bool], list[str]]


_WORKLOAD_WIDE = ("CONTAINERS", "IMAGES", "SELECTOR")
TABLES: dict[str, TableSpec] = {
    "Pod": TableSpec(
        ("READY", "STATUS", "RESTARTS", "AGE"),
        ("IP", "NODE", "NOMINATED NODE", "READINESS GATES"),
        _pod_row,
    ),
    "Service": TableSpec(
        ("TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"), ("SELECTOR",), _service_row
    ),
    "Deployment": TableSpec(
        ("READY", "UP-TO-DATE", "AVAILABLE", "AGE"), _WORKLOAD_WIDE, _deployment_row
    ),
    "ReplicaSet": TableSpec(
        ("DESIRED", "CURRENT", "READY", "AGE"), _WORKLOAD_WIDE, _replicaset_row
    ),
    "DaemonSet": TableSpec(
        ("DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE SELECTOR", "AGE"),
        _WORKLOAD_WIDE,
        _daemonset_row,
    ),
    "ControllerRevision": TableSpec(
        ("CONTROLLER", "REVISION", "AGE"), (), _controller_revision_row
    ),
    "Node": TableSpec(
        ("STATUS", "ROLES", "AGE", "VERSION"),
        ("INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"),
        _node_row,
    ),
    "Endpoints": TableSpec(("ENDPOINTS", "AGE"), (), _endpoints_row),
    "EndpointSlice": TableSpec(("ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"), (), _slice_row),
    "Namespace": TableSpec(("STATUS", "AGE"), (), _namespace_row),
    "Event": TableSpec(("LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"), (), _event_row),
    "NetworkPolicy": TableSpec(("POD-SELECTOR", "AGE"), (), _netpol_row),
    "Ingress": TableSpec(("CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"), (), _ingress_row),
    "IngressClass": TableSpec(("CONTROLLER", "PARAMETERS", "AGE"), (), _ingress_class_row),
    "ConfigMap": TableSpec(("DATA", "AGE"), (), _config_map_row),
    "Secret": TableSpec(("TYPE", "DATA", "AGE"), (), _secret_row),
    "ServiceAccount": TableSpec(("SECRETS", "AGE"), (), _service_account_row),
    "Lease": TableSpec(("HOLDER", "AGE"), (), _lease_row),
    "ReplicationController": TableSpec(
        ("DESIRED", "CURRENT", "READY", "AGE"), _WORKLOAD_WIDE, _replication_controller_row
    ),
}
