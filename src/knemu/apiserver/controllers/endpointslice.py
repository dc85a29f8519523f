"""EndpointSlice controller (pkg/controller/endpointslice, discovery.k8s.io/v1).

Theory of operation.  For every Service with a selector (not ExternalName) the controller
computes, from the pods the selector matches, the endpoints that should exist and groups them
by their *resolved port set*: a named targetPort resolves per pod (podutil.FindPort: the
container port with that name and the service port's protocol), so pods that call their "http"
port 80 and pods that call it 81 land in different slices, exactly as Kubernetes does (seed
003: the named-port Service yields 10.x:80 and 10.y:81).  A pod that resolves none of the
ports is left out.  Each group becomes one or more slices of at most 100 endpoints, named
``<service>-<hash of the group>`` so the names are stable across restarts, labelled
``kubernetes.io/service-name`` and ``endpointslice.kubernetes.io/managed-by``, and owned by
the Service (so the garbage collector removes them with it).

Endpoint conditions (https://kubernetes.io/docs/concepts/services-networking/endpoint-
slices/#conditions): ``serving`` = pod Ready; ``ready`` = serving and not terminating;
``terminating`` = deletionTimestamp set; the pod's node must be Ready too, since the node
lifecycle controller marks pods on an unreachable node not ready.  publishNotReadyAddresses
makes every endpoint ready and serving.  ``hostname`` is set for pods whose spec.subdomain
names the Service (headless DNS A records per pod).
"""

from __future__ import annotations

from typing import Any

from knemu.apiserver.controllers.common import (
    Context,
    Obj,
    is_pod_ready,
    is_terminating,
    labels_of,
    meta,
    name,
    namespace,
    owner_reference,
    uid,
)
from knemu.apiserver.meta import labels, naming
from knemu.apiserver.nodes import is_ready

SERVICE_NAME = "kubernetes.io/service-name"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
HEADLESS = "service.kubernetes.io/headless"
MAX_ENDPOINTS_PER_SLICE = 100  # kube-controller-manager --max-endpoints-per-slice default

PortKey = tuple[tuple[str, str, int, str], ...]  # (name, protocol, port, appProtocol)


def resolve_port(pod: Obj, svc_port: Obj) -> int | None:
    """podutil.FindPort: a number as is, a name via the pod's container ports."""
    target = svc_port.get("targetPort", svc_port.get("port"))
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target and port.get("protocol", "TCP") == svc_port.get(
                "protocol", "TCP"
            ):
                return int(port["containerPort"])
    return None


def pod_ports(svc: Obj, pod: Obj) -> PortKey | None:
    """The ports the pod serves for the Service; None if the pod resolves none of them."""
    svc_ports = (svc.get("spec") or {}).get("ports") or []
    resolved = []
    for sp in svc_ports:
        number = resolve_port(pod, sp)
        if number is not None:
            entry = (
                str(sp.get("name") or ""),
                str(sp.get("protocol", "TCP")),
                number,
                str(sp.get("appProtocol") or ""),
            )
            resolved.append(entry)
    if svc_ports and not resolved:
        return None
    return tuple(resolved)


def selected_pods(svc: Obj, pods: list[Obj]) -> list[Obj]:
    """Pods of the Service's namespace matching its selector, with an IP, not finished."""
    selector = labels.from_map((svc.get("spec") or {}).get("selector"))
    out = []
    for pod in pods:
        status = pod.get("status") or {}
        if namespace(pod) != namespace(svc) or not status.get("podIP"):
            continue
        if status.get("phase") in ("Succeeded", "Failed"):
            continue
        if selector.matches(labels_of(pod)):
            out.append(pod)
    return out


def pod_conditions(svc: Obj, pod: Obj, node_ready: bool) -> Obj:
    terminating = is_terminating(pod)
    serving = is_pod_ready(pod) and node_ready
    if (svc.get("spec") or {}).get("publishNotReadyAddresses"):
        return {"ready": True, "serving": True, "terminating": terminating}
    return {"ready": serving and not terminating, "serving": serving, "terminating": terminating}


def pod_endpoint(svc: Obj, pod: Obj, node_ready: bool) -> Obj:
    spec = pod.get("spec") or {}
    endpoint: Obj = {
        "addresses": [pod["status"]["podIP"]],
        "conditions": pod_conditions(svc, pod, node_ready),
        "targetRef": {
            "kind": "Pod",
            "namespace": namespace(pod),
            "name": name(pod),
            "uid": uid(pod),
        },
    }
    if spec.get("nodeName"):
        endpoint["nodeName"] = spec["nodeName"]
    if spec.get("hostname") and spec.get("subdomain") == name(svc):
        endpoint["hostname"] = spec["hostname"]
    return endpoint


def port_list(key: PortKey) -> list[Obj]:
    ports = []
    for port_name, protocol, number, app in key:
        entry: Obj = {"name": port_name, "protocol": protocol, "port": number}
        if app:
            entry["appProtocol"] = app
        ports.append(entry)
    return ports


def slice_name(base: str, key: Any, taken: set[str]) -> str:
    digest = naming.safe_encode(str(naming.fnv32a(naming.canonical_json(key))))
    candidate = f"{base[:57]}-{digest[-5:]}"
    if candidate in taken:
        candidate = f"{base[:52]}-{digest}"
    taken.add(candidate)
    return candidate


def make_slices(
    owner: Obj,
    svc_name: str,
    managed_by: str,
    groups: dict[PortKey, list[Obj]],
    extra_labels: dict[str, str],
) -> list[Obj]:
    """Slices of at most 100 endpoints per port group, in a stable order."""
    slice_labels = {**extra_labels, SERVICE_NAME: svc_name, MANAGED_BY: managed_by}
    taken: set[str] = set()
    out = []
    for key in sorted(groups):
        endpoints = sorted(
            groups[key], key=lambda e: (e["addresses"], e.get("targetRef", {}).get("name", ""))
        )
        chunks = [
            endpoints[i : i + MAX_ENDPOINTS_PER_SLICE]
            for i in range(0, len(endpoints), MAX_ENDPOINTS_PER_SLICE)
        ]
        for index, chunk in enumerate(chunks or [[]]):
            out.append(
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": slice_name(name(owner), [list(key), index], taken),
                        "namespace": namespace(owner),
                        "generateName": f"{name(owner)}-",
                        "labels": dict(slice_labels),
                        "ownerReferences": [owner_reference(owner)],
                    },
                    "addressType": "IPv4",
                    "endpoints": chunk,
                    "ports": port_list(key),
                }
            )
    return out


def service_slices(svc: Obj, pods: list[Obj], ready_nodes: set[str]) -> list[Obj]:
    groups: dict[PortKey, list[Obj]] = {}
    for pod in selected_pods(svc, pods):
        key = pod_ports(svc, pod)
        if key is not None:
            node_ready = (pod.get("spec") or {}).get("nodeName") in ready_nodes
            groups.setdefault(key, []).append(pod_endpoint(svc, pod, node_ready))
    if not groups:
        groups[()] = []  # a placeholder slice, as the controller keeps for an empty Service
    extra = {k: v for k, v in labels_of(svc).items() if k not in (SERVICE_NAME, MANAGED_BY)}
    if (svc.get("spec") or {}).get("clusterIP") == "None":
        extra[HEADLESS] = ""
    return make_slices(svc, name(svc), CONTROLLER_NAME, groups, extra)


class PodIndex:
    """Pods by (namespace, label key, value): a Service's candidates are the pods carrying
    its rarest selector label, so a sync costs O(selected pods), not O(services x pods)."""

    def __init__(self, pods: list[Obj]) -> None:
        self._by_label: dict[tuple[str, str, str], list[Obj]] = {}
        for pod in pods:
            for key, value in labels_of(pod).items():
                self._by_label.setdefault((namespace(pod), key, value), []).append(pod)

    def candidates(self, svc: Obj) -> list[Obj]:
        selector = (svc.get("spec") or {}).get("selector") or {}
        lists = [
            self._by_label.get((namespace(svc), str(k), str(v)), []) for k, v in selector.items()
        ]
        return min(lists, key=len) if lists else []


def has_selector(svc: Obj) -> bool:
    spec = svc.get("spec") or {}
    return bool(spec.get("selector")) and spec.get("type") != "ExternalName"


def reconcile_slices(ctx: Context, managed_by: str, desired: list[Obj], now: float) -> None:
    """Make the slices managed by ``managed_by`` exactly ``desired`` (create/update/delete)."""
    store = ctx.store
    wanted = {(namespace(s), name(s)): s for s in desired}
    for current in ctx.list("EndpointSlice"):
        if (meta(current).get("labels") or {}).get(MANAGED_BY) != managed_by:
            continue
        key = (namespace(current), name(current))
        target = wanted.pop(key, None)
        if target is None:
            store.delete("EndpointSlice", key[0], key[1], now)
            continue
        merged = {**current, **{k: v for k, v in target.items() if k != "metadata"}}
        merged["metadata"] = {
            **meta(current),
            "labels": target["metadata"]["labels"],
            "ownerReferences": target["metadata"]["ownerReferences"],
        }
        if merged != current:
            store.update(merged, now)
    for target in wanted.values():
        store.create(target, now)


class EndpointSliceController:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def sync(self, now: float) -> None:
        pods = PodIndex(self._ctx.list("Pod"))
        ready_nodes = {name(n) for n in self._ctx.list("Node") if is_ready(n)}
        desired: list[Obj] = []
        for svc in self._ctx.list("Service"):
            if has_selector(svc) and not is_terminating(svc):
                desired += service_slices(svc, pods.candidates(svc), ready_nodes)
        reconcile_slices(self._ctx, CONTROLLER_NAME, desired, now)
