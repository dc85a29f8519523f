"""core/v1 Endpoints controller and EndpointSlice mirroring.

Endpoints (pkg/controller/endpoint): for every Service with a selector, one Endpoints object
of the same name whose subsets group addresses by the ports they serve (endpoints.RepackSubsets);
ready pods go to ``addresses``, others to ``notReadyAddresses``; terminating pods are left out
unless publishNotReadyAddresses.  ``kubectl describe service`` prints its Endpoints line from
this object.  Objects it manages carry ``endpointslice.kubernetes.io/skip-mirror: "true"``, as
in Kubernetes, and are deleted with their Service.  Services without a selector: the user's
Endpoints object is left alone.

Mirroring (pkg/controller/endpointslicemirroring): a user's Endpoints object for a Service
without a selector is mirrored into EndpointSlices managed by
``endpointslicemirroring-controller.k8s.io`` (one group per subset), so node agents, which
read slices only, route to it.
"""

from __future__ import annotations

from typing import Any

from knemu.apiserver.controllers.common import (
    Context,
    Obj,
    is_terminating,
    labels_of,
    meta,
    name,
    namespace,
)
from knemu.apiserver.controllers.endpointslice import (
    PodIndex,
    PortKey,
    has_selector,
    make_slices,
    pod_conditions,
    pod_endpoint,
    pod_ports,
    port_list,
    reconcile_slices,
    selected_pods,
)
from knemu.apiserver.nodes import is_ready
from knemu.errors import NotFound

SKIP_MIRROR = "endpointslice.kubernetes.io/skip-mirror"
MIRROR_CONTROLLER = "endpointslicemirroring-controller.k8s.io"
MAX_MIRRORED_ADDRESSES = 1000  # endpointslicemirroring maxEndpointsPerSubset


def _address(endpoint: Obj) -> Obj:
    address: Obj = {"ip": endpoint["addresses"][0], "targetRef": endpoint["targetRef"]}
    for key in ("nodeName", "hostname"):
        if key in endpoint:
            address[key] = endpoint[key]
    return address


def endpoints_subsets(svc: Obj, pods: list[Obj], ready_nodes: set[str]) -> list[Obj]:
    groups: dict[PortKey, tuple[list[Obj], list[Obj]]] = {}
    publish = bool((svc.get("spec") or {}).get("publishNotReadyAddresses"))
    for pod in selected_pods(svc, pods):
        key = pod_ports(svc, pod)
        if key is None or (is_terminating(pod) and not publish):
            continue
        node_ready = (pod.get("spec") or {}).get("nodeName") in ready_nodes
        ready = pod_conditions(svc, pod, node_ready)["ready"]
        ready_list, not_ready = groups.setdefault(key, ([], []))
        (ready_list if ready else not_ready).append(_address(pod_endpoint(svc, pod, node_ready)))
    subsets = []
    for key in sorted(groups):
        ready_list, not_ready = groups[key]
        subset: Obj = {}
        if ready_list:
            subset["addresses"] = sorted(ready_list, key=lambda a: a["ip"])
        if not_ready:
            subset["notReadyAddresses"] = sorted(not_ready, key=lambda a: a["ip"])
        if key:
            subset["ports"] = [{k: v for k, v in p.items() if v != ""} for p in port_list(key)]
        subsets.append(subset)
    return subsets


def desired_endpoints(svc: Obj, subsets: list[Obj]) -> Obj:
    obj: Obj = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": name(svc),
            "namespace": namespace(svc),
            "labels": {**labels_of(svc), SKIP_MIRROR: "true"},
        },
    }
    if subsets:
        obj["subsets"] = subsets
    return obj


def mirrored_slices(endpoints: Obj) -> list[Obj]:
    groups: dict[PortKey, list[Obj]] = {}
    count = 0
    for subset in endpoints.get("subsets") or []:
        ports = subset.get("ports") or []
        key: PortKey = tuple(
            sorted(
                (
                    str(p.get("name") or ""),
                    str(p.get("protocol", "TCP")),
                    int(p.get("port", 0)),
                    str(p.get("appProtocol") or ""),
                )
                for p in ports
            )
        )
        for field, ready in (("addresses", True), ("notReadyAddresses", False)):
            for addr in subset.get(field) or []:
                count += 1
                if count > MAX_MIRRORED_ADDRESSES:
                    break
                groups.setdefault(key, []).append(_mirrored_endpoint(addr, ready))
    extra = {k: v for k, v in labels_of(endpoints).items() if k != SKIP_MIRROR}
    return (
        make_slices(endpoints, name(endpoints), MIRROR_CONTROLLER, groups, extra) if groups else []
    )


def _mirrored_endpoint(addr: Any, ready: bool) -> Obj:
    endpoint: Obj = {
        "addresses": [addr.get("ip")],
        "conditions": {"ready": ready, "serving": ready, "terminating": False},
    }
    for key in ("nodeName", "hostname", "targetRef"):
        if addr.get(key):
            endpoint[key] = addr[key]
    return endpoint


class EndpointsController:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def sync(self, now: float) -> None:
        services = {(namespace(s), name(s)): s for s in self._ctx.list("Service")}
        pods = PodIndex(self._ctx.list("Pod"))
        ready_nodes = {name(n) for n in self._ctx.list("Node") if is_ready(n)}
        for svc in services.values():
            if has_selector(svc) and not is_terminating(svc):
                subsets = endpoints_subsets(svc, pods.candidates(svc), ready_nodes)
                self._apply(desired_endpoints(svc, subsets), now)
        mirrored: list[Obj] = []
        for ep in self._ctx.list("Endpoints"):
            key = (namespace(ep), name(ep))
            managed = (meta(ep).get("labels") or {}).get(SKIP_MIRROR) == "true"
            if managed and key not in services:
                self._delete(ep, now)
            elif not managed and key in services and not has_selector(services[key]):
                mirrored += mirrored_slices(ep)
        reconcile_slices(self._ctx, MIRROR_CONTROLLER, mirrored, now)

    def _apply(self, desired: Obj, now: float) -> None:
        store = self._ctx.store
        current = store.get("Endpoints", namespace(desired), name(desired))
        if current is None:
            store.create(desired, now)
            return
        merged = {**current, "metadata": {**meta(current), "labels": desired["metadata"]["labels"]}}
        merged.pop("subsets", None)
        if "subsets" in desired:
            merged["subsets"] = desired["subsets"]
        if merged != current:
            store.update(merged, now)

    def _delete(self, ep: Obj, now: float) -> None:
        try:
            self._ctx.store.delete("Endpoints", namespace(ep), name(ep), now)
        except NotFound:
            pass
