"""Address and port management: ClusterIPs, NodePorts, node podCIDRs.

Allocation state is derived from the objects in the store on every call (there are no
allocation tables), so it is always consistent with what exists and survives restarts.

* ClusterIPs come from ``service_cidr`` (Kubernetes "Service ClusterIP allocation",
  https://kubernetes.io/docs/concepts/services-networking/cluster-ip-allocation/): never the
  network or broadcast address; ``.1`` is kept for ``default/kubernetes`` and ``.10`` for
  ``kube-system/kube-dns`` (they ask for them explicitly); otherwise the lowest free address.
  A requested address is honoured unless another Service holds it.
  DEVIATION: Kubernetes rejects a requested ClusterIP outside the service CIDR.  knemu accepts
  it and reports a Warning event (reason ClusterIPOutOfRange, as the repair controller words
  it), because seed 002's LoadBalancer example asks for 10.0.171.239 and must apply unchanged;
  knemu's userspace data plane can route any virtual IP.
* NodePorts come from [node_port_min, node_port_max] for NodePort and LoadBalancer Services;
  a requested port is honoured unless another Service holds it; on update a port keeps the
  nodePort it had (as the api-server does when the type stays the same).
* healthCheckNodePort: a LoadBalancer Service with ``externalTrafficPolicy: Local`` gets one
  more port from the same range (kube-proxy serves its healthcheck there); a requested one is
  honoured unless taken, an update keeps the old one, and any other Service loses it (the
  registry's needsHCNodePort).
* podCIDRs: node-N gets the N-th /24 of ``cluster_cidr`` (config.node_pod_cidr), N >= 1.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from knemu.apiserver.storage.store import Store
from knemu.apiserver.validation.common import as_list, as_map, duplicate, invalid
from knemu.config import ApiServerConfig, node_pod_cidr
from knemu.errors import ConfigError, Exhausted, FieldError, Invalid

Obj = dict[str, Any]
RESERVED_SERVICE_OFFSETS = (1, 10)  # kubernetes (.1) and kube-dns (.10)
_NODE_NAME = re.compile(r"node-(\d+)")


def _key(obj: Obj) -> str:
    meta = as_map(obj.get("metadata"))
    return f"{meta.get('namespace') or 'default'}/{meta.get('name')}"


def _service_ips(svc: Obj) -> set[str]:
    spec = as_map(svc.get("spec"))
    ips = {str(ip) for ip in as_list(spec.get("clusterIPs"))}
    ips.add(str(spec.get("clusterIP") or ""))
    return {ip for ip in ips if ip and ip != "None"}


def cluster_ips_in_use(store: Store, exclude: str) -> dict[str, str]:
    """ClusterIP -> "namespace/name" of the Service holding it (``exclude`` left out)."""
    used: dict[str, str] = {}
    for svc in store.list("Service"):
        if _key(svc) != exclude:
            for ip in _service_ips(svc):
                used[ip] = _key(svc)
    return used


def lowest_free_ip(service_cidr: str, used: set[str]) -> str:
    net = ipaddress.ip_network(service_cidr)
    base, size = int(net.network_address), net.num_addresses
    for offset in range(1, max(size - 1, 1)):
        if offset in RESERVED_SERVICE_OFFSETS:
            continue
        ip = str(ipaddress.ip_address(base + offset))
        if ip not in used:
            return ip
    raise Exhausted(
        f"no free ClusterIP left in service CIDR {service_cidr} ({len(used)} in use): delete "
        "a Service, make one headless (clusterIP: None), or configure a larger service_cidr"
    )


def assign_cluster_ip(store: Store, config: ApiServerConfig, svc: Obj) -> str | None:
    """Give ``svc`` its ClusterIP in place; returns a warning for an out-of-range request."""
    spec, name = svc["spec"], _key(svc)
    if spec.get("type") == "ExternalName":
        spec.pop("clusterIP", None)
        spec.pop("clusterIPs", None)
        return None
    requested = str(spec.get("clusterIP") or "")
    spec.setdefault("ipFamilies", ["IPv4"])
    spec.setdefault("ipFamilyPolicy", "SingleStack")
    if requested == "None":
        spec["clusterIPs"] = ["None"]
        return None
    used = cluster_ips_in_use(store, name)
    if not requested:
        requested = lowest_free_ip(config.service_cidr, set(used))
    elif requested in used:
        detail = (
            f"failed to allocate IP {requested}: provided IP is already allocated "
            f'(by service "{used[requested]}"); leave spec.clusterIP empty to get a free one'
        )
        raise Invalid("Service", name.split("/")[1], [invalid("spec.clusterIP", requested, detail)])
    spec["clusterIP"] = requested
    spec["clusterIPs"] = [requested]
    if ipaddress.ip_address(requested) not in ipaddress.ip_network(config.service_cidr):
        return (
            f"Cluster IP [IPv4]:{requested} is not within the configured Service CIDR "
            f"{config.service_cidr}; knemu routes it anyway (a real cluster would reject it)"
        )
    return None


# ---- NodePorts -------------------------------------------------------------------------------


def node_ports_in_use(store: Store, exclude: str) -> dict[int, str]:
    used: dict[int, str] = {}
    for svc in store.list("Service"):
        if _key(svc) == exclude:
            continue
        for port in as_list(as_map(svc.get("spec")).get("ports")):
            node_port = as_map(port).get("nodePort")
            if isinstance(node_port, int) and node_port:
                used[node_port] = _key(svc)
        hc = as_map(svc.get("spec")).get("healthCheckNodePort")
        if isinstance(hc, int) and hc:
            used[hc] = _key(svc)
    return used


def _old_node_port(old: Obj | None, port: Obj) -> int | None:
    for old_port in as_list(as_map((old or {}).get("spec")).get("ports")):
        old_port = as_map(old_port)
        same = (old_port.get("port"), old_port.get("protocol")) == (
            port.get("port"),
            port.get("protocol"),
        )
        if same and isinstance(old_port.get("nodePort"), int):
            return int(old_port["nodePort"])
    return None


def _check_node_port(
    config: ApiServerConfig, path: str, node_port: int, holder: str | None
) -> FieldError | None:
    lo, hi = config.node_port_min, config.node_port_max
    if not lo <= node_port <= hi:
        return invalid(
            path,
            node_port,
            f"provided port is not in the valid range. The range of valid ports is {lo}-{hi}",
        )
    if holder is not None:
        return invalid(
            path, node_port, f'provided port is already allocated (by service "{holder}")'
        )
    return None


def _free_node_port(config: ApiServerConfig, taken: set[int], name: str) -> int:
    for candidate in range(config.node_port_min, config.node_port_max + 1):
        if candidate not in taken:
            return candidate
    raise Exhausted(
        f"no free NodePort left in {config.node_port_min}-{config.node_port_max} for Service "
        f"{name}: delete a NodePort/LoadBalancer Service or widen node_port_min/node_port_max"
    )


def assign_node_ports(store: Store, config: ApiServerConfig, svc: Obj, old: Obj | None) -> None:
    """Give every port of a NodePort/LoadBalancer Service a nodePort, in place."""
    spec, name = svc["spec"], _key(svc)
    wants = spec.get("type") == "NodePort" or (
        spec.get("type") == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts", True)
    )
    if not wants:
        return
    used = node_ports_in_use(store, name)
    mine: dict[tuple[int, Any], int] = {}
    errs: list[FieldError] = []
    ports = [p for p in as_list(spec.get("ports")) if isinstance(p, dict)]
    for i, port in enumerate(ports):
        requested = port.get("nodePort") or _old_node_port(old, port)
        if not isinstance(requested, int):
            continue
        path = f"spec.ports[{i}].nodePort"
        err = _check_node_port(config, path, requested, used.get(requested))
        if err is None and (requested, port.get("protocol")) in mine:
            err = duplicate(path, requested)
        if err is not None:
            errs.append(err)
        mine[(requested, port.get("protocol"))] = i
        port["nodePort"] = requested
    if errs:
        raise Invalid("Service", name.split("/")[1], errs)
    taken = set(used) | {np for np, _ in mine}
    for port in ports:
        if not port.get("nodePort"):
            port["nodePort"] = _free_node_port(config, taken, name)
            taken.add(port["nodePort"])


def assign_health_check_node_port(
    store: Store, config: ApiServerConfig, svc: Obj, old: Obj | None
) -> None:
    """``spec.healthCheckNodePort`` of a LoadBalancer Service with externalTrafficPolicy
    Local, in place (after ``assign_node_ports``); removed from every other Service."""
    spec, name = svc["spec"], _key(svc)
    if spec.get("type") != "LoadBalancer" or spec.get("externalTrafficPolicy") != "Local":
        spec.pop("healthCheckNodePort", None)
        return
    old_spec = as_map(as_map(old).get("spec"))
    requested = spec.get("healthCheckNodePort") or old_spec.get("healthCheckNodePort")
    used = node_ports_in_use(store, name)
    own = {as_map(p).get("nodePort") for p in as_list(spec.get("ports"))}
    if isinstance(requested, int) and requested:
        holder = used.get(requested) or (name if requested in own else None)
        err = _check_node_port(config, "spec.healthCheckNodePort", requested, holder)
        if err is not None:
            raise Invalid("Service", name.split("/")[1], [err])
        spec["healthCheckNodePort"] = requested
        return
    taken = set(used) | {p for p in own if isinstance(p, int)}
    spec["healthCheckNodePort"] = _free_node_port(config, taken, name)


# ---- node podCIDRs ------------------------------------------------------------------------


def node_index(cluster_cidr: str, pod_cidr: Any) -> int | None:
    """N for a podCIDR that is the N-th /24 of the cluster CIDR, else None."""
    try:
        net = ipaddress.ip_network(str(pod_cidr))
        cluster = ipaddress.ip_network(cluster_cidr)
    except ValueError:
        return None
    if net.version != cluster.version or not net.subnet_of(cluster):  # type: ignore[arg-type]
        return None
    return (int(net.network_address) - int(cluster.network_address)) // net.num_addresses


def indexes_in_use(store: Store, cluster_cidr: str) -> dict[int, str]:
    used: dict[int, str] = {}
    for node in store.list("Node"):
        index = node_index(cluster_cidr, as_map(node.get("spec")).get("podCIDR"))
        if index is not None:
            used[index] = str(as_map(node.get("metadata")).get("name"))
    return used


def _max_index(cluster_cidr: str) -> int:
    net = ipaddress.ip_network(cluster_cidr)
    return max(0, (1 << max(24 - net.prefixlen, 0)) - 1)


def choose_node(store: Store, config: ApiServerConfig, name: str) -> tuple[str, str]:
    """(node name, podCIDR) for a registering node; ``name`` empty -> lowest free node-N.

    An existing node keeps its podCIDR; a requested ``node-N`` gets index N when free.
    """
    used = indexes_in_use(store, config.cluster_cidr)
    if name:
        existing = store.get("Node", "", name)
        cidr = as_map((existing or {}).get("spec")).get("podCIDR")
        if existing is not None and cidr:
            return name, str(cidr)
        m = _NODE_NAME.fullmatch(name)
        wanted = int(m.group(1)) if m else None
        if (
            wanted is not None
            and 1 <= wanted <= _max_index(config.cluster_cidr)
            and wanted not in used
        ):
            return name, _cidr(config, wanted)
        return name, _cidr(config, _free_index(config, used))
    names = {str(as_map(n.get("metadata")).get("name")) for n in store.list("Node")}
    for index in range(1, _max_index(config.cluster_cidr) + 1):
        if index not in used and f"node-{index}" not in names:
            return f"node-{index}", _cidr(config, index)
    raise _exhausted(config, len(used))


def _free_index(config: ApiServerConfig, used: dict[int, str]) -> int:
    for index in range(1, _max_index(config.cluster_cidr) + 1):
        if index not in used:
            return index
    raise _exhausted(config, len(used))


def _cidr(config: ApiServerConfig, index: int) -> str:
    try:
        return node_pod_cidr(config.cluster_cidr, index)
    except ConfigError:
        raise _exhausted(config, index) from None


def _exhausted(config: ApiServerConfig, count: int) -> Exhausted:
    return Exhausted(
        f"no free podCIDR left in cluster CIDR {config.cluster_cidr} ({count} /24 blocks are "
        "held by nodes): delete a Node (knemu delete node NAME) or configure a larger cluster_cidr"
    )
