"""Watched objects -> data-plane tables (sans-I/O): what the agent tells the router and proxies.

kube-proxy builds its rules from Services and EndpointSlices
(https://kubernetes.io/docs/reference/networking/virtual-ips/); flannel builds its routes and
VTEP neighbours from Node objects (podCIDR plus the ``flannel.alpha.coreos.com/backend-data``
VtepMAC annotation, here ``Node.vtep_mac``).  These functions do that translation and nothing
else, so they are tested without sockets.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from knemu.config import DNS_SERVICE_IP, WIREGUARD_KEY_ANNOTATION
from knemu.errors import ConfigError
from knemu.node_agent.kubeproxy.l2announce import LoadBalancerAddress
from knemu.node_agent.kubeproxy.relays import NodePortRule
from knemu.node_agent.kubeproxy.service_table import Backend, ServiceEntry, ServicePortEntry
from knemu.proto import knemu_pb2 as pb

log = logging.getLogger(__name__)

# Where a node's pod network backend is published (the api-server copies the agent's
# knemu.dev/network-backend label here, as flannel writes its own); absent means vxlan.
BACKEND_TYPE_ANNOTATION = "flannel.alpha.coreos.com/backend-type"

DNS_SERVICE_KEY = "kube-system/kube-dns"
DNS_PORT = 53
# sessionAffinityConfig.clientIP.timeoutSeconds default (core/v1 types.go: 3 hours).
DEFAULT_AFFINITY_TIMEOUT_S = 10800
PROXIED_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")


def vtep_mac(node_name: str, underlay_ip: str) -> str:
    """A stable, locally administered unicast MAC for this node's VTEP.

    IEEE 802: bit 1 of the first octet set = locally administered, bit 0 clear = unicast.
    Derived from the name and IP so a restarted agent keeps its MAC (peers' tables stay valid).
    """
    digest = hashlib.sha256(f"{node_name}/{underlay_ip}".encode()).digest()
    octets = bytes([(digest[0] & 0xFC) | 0x02]) + digest[1:6]
    return ":".join(f"{b:02x}" for b in octets)


def service_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def is_proxied(svc: pb.Service) -> bool:
    """Headless ("None") and ExternalName services get no kube-proxy rules (DNS only)."""
    return svc.type in PROXIED_TYPES and svc.cluster_ip not in ("", "None")


def is_agent_owned(svc: pb.Service) -> bool:
    """kube-dns is served node-locally by the agent's forwarder, whatever the api-server says."""
    key = service_key(svc.metadata.namespace, svc.metadata.name)
    return key == DNS_SERVICE_KEY or DNS_SERVICE_IP in (svc.cluster_ip, *svc.cluster_ips)


def service_entry(svc: pb.Service) -> ServiceEntry:
    cluster_ips = tuple(dict.fromkeys(ip for ip in (svc.cluster_ip, *svc.cluster_ips) if ip))
    affinity = 0.0
    if svc.session_affinity == "ClientIP":
        affinity = float(svc.session_affinity_timeout_s or DEFAULT_AFFINITY_TIMEOUT_S)
    return ServiceEntry(
        key=service_key(svc.metadata.namespace, svc.metadata.name),
        cluster_ips=cluster_ips,
        ports=tuple(
            ServicePortEntry(p.name, p.protocol or "TCP", p.port, p.node_port)
            for p in svc.ports
            if (p.protocol or "TCP") in ("TCP", "UDP")
        ),
        session_affinity_timeout_s=affinity,
        external_ips=tuple(dict.fromkeys((*svc.external_ips, *svc.load_balancer_ips))),
        # KEP-2086: ClusterIP traffic only to this node's endpoints; unset means Cluster.
        internal_local=svc.internal_traffic_policy == "Local",
        external_local=is_external_local(svc),
        load_balancer_ips=tuple(svc.load_balancer_ips),
        source_ranges=tuple(svc.load_balancer_source_ranges),
    )


def backends_of(
    entry: ServiceEntry, slices: Iterable[pb.EndpointSlice]
) -> dict[str, list[Backend]]:
    """Backends per service port name from the service's EndpointSlices.

    The EndpointSlice controller has already resolved named target ports per pod: a slice
    groups endpoints sharing one port list, and its port ``name`` is the service port's name
    (discovery.k8s.io/v1 EndpointPort).  Readiness is passed on; the service table applies the
    ready / serving-terminating fallback.
    """
    wanted = {(p.name, p.protocol) for p in entry.ports}
    out: dict[str, list[Backend]] = {p.name: [] for p in entry.ports}
    for eps in slices:
        if eps.address_type not in ("", "IPv4"):
            continue
        for port in eps.ports:
            if (port.name, port.protocol or "TCP") not in wanted or not port.port:
                continue
            for ep in eps.endpoints:
                c = ep.conditions
                out[port.name].extend(
                    Backend(
                        addr, port.port, c.ready, c.serving or c.ready, c.terminating, ep.node_name
                    )
                    for addr in ep.addresses
                )
    return out


def dns_service(gateway_ip: str) -> tuple[ServiceEntry, dict[str, list[Backend]]]:
    """kube-dns 10.96.0.10:53 (UDP and TCP) -> this node's forwarder on the gateway address."""
    entry = ServiceEntry(
        key=DNS_SERVICE_KEY,
        cluster_ips=(DNS_SERVICE_IP,),
        ports=(
            ServicePortEntry("dns", "UDP", DNS_PORT),
            ServicePortEntry("dns-tcp", "TCP", DNS_PORT),
        ),
    )
    backend = Backend(gateway_ip, DNS_PORT, ready=True)
    return entry, {"dns": [backend], "dns-tcp": [backend]}


def node_port_rules(services: Iterable[pb.Service]) -> list[NodePortRule]:
    """One listener per (protocol, nodePort) of every NodePort/LoadBalancer service."""
    rules = []
    for svc in services:
        if not is_proxied(svc) or svc.type not in ("NodePort", "LoadBalancer"):
            continue
        for p in svc.ports:
            if p.node_port and (p.protocol or "TCP") in ("TCP", "UDP"):
                rules.append(NodePortRule(p.protocol or "TCP", p.node_port, svc.cluster_ip, p.port))
    return sorted(set(rules))


def is_external_local(svc: pb.Service) -> bool:
    """externalTrafficPolicy Local, which only NodePort and LoadBalancer services have."""
    return svc.type in ("NodePort", "LoadBalancer") and svc.external_traffic_policy == "Local"


def local_node_ports(services: Iterable[pb.Service]) -> set[tuple[str, int]]:
    """(protocol, nodePort) of every externalTrafficPolicy Local port: steered into the router
    so the client's address is kept (``dataplane.steering``)."""
    return {
        (p.protocol or "TCP", p.node_port)
        for svc in services
        if is_proxied(svc) and is_external_local(svc)
        for p in svc.ports
        if p.node_port and (p.protocol or "TCP") in ("TCP", "UDP")
    }


def health_check_ports(services: Iterable[pb.Service]) -> dict[int, str]:
    """healthCheckNodePort -> "namespace/name": what kube-proxy's healthcheck server serves."""
    return {
        svc.health_check_node_port: service_key(svc.metadata.namespace, svc.metadata.name)
        for svc in services
        if is_proxied(svc) and is_external_local(svc) and svc.health_check_node_port
    }


def load_balancer_addresses(
    services: Iterable[pb.Service], slices_of: Callable[[str, str], list[pb.EndpointSlice]]
) -> list[LoadBalancerAddress]:
    """Every status.loadBalancer.ingress IP of a LoadBalancer service, with what the MetalLB
    L2 choice needs (``kubeproxy.l2announce``): the policy and the nodes with ready endpoints."""
    out = []
    for svc in services:
        if svc.type != "LoadBalancer" or not is_proxied(svc) or is_agent_owned(svc):
            continue
        ns, name = svc.metadata.namespace, svc.metadata.name
        nodes = frozenset(
            ep.node_name
            for eps in slices_of(ns, name)
            for ep in eps.endpoints
            if ep.node_name and ep.conditions.ready
        )
        out += [
            LoadBalancerAddress(service_key(ns, name), ip, is_external_local(svc), nodes)
            for ip in svc.load_balancer_ips
            if ip and ":" not in ip
        ]
    return out


def ready_nodes(nodes: Iterable[pb.Node]) -> list[str]:
    return [n.metadata.name for n in nodes if n.ready]


@dataclass(frozen=True)
class PeerSpec:
    name: str
    pod_cidr: str
    underlay_ip: str
    vtep_mac: str
    vxlan_port: int
    ready: bool
    backend: str = "vxlan"
    public_key: str = ""  # WireGuard (Calico's annotation); empty: the node encrypts nothing


def peer_of(node: pb.Node, my_name: str) -> PeerSpec | None:
    """The route a peer node's object implies; None for this node or an incomplete object."""
    if node.metadata.name == my_name:
        return None
    if not (node.pod_cidr and node.internal_ip and node.vtep_mac):
        return None
    return PeerSpec(
        node.metadata.name,
        node.pod_cidr,
        node.internal_ip,
        node.vtep_mac,
        node.vxlan_port or 4789,
        node.ready,
        node.metadata.annotations.get(BACKEND_TYPE_ANNOTATION) or "vxlan",
        node.metadata.annotations.get(WIREGUARD_KEY_ANNOTATION, ""),
    )


class RouteSink(Protocol):
    """What the tables drive: the router's peer routes and service rules."""

    def set_peer(
        self,
        name: str,
        pod_cidr: str,
        underlay_ip: str,
        vtep_mac: str,
        vxlan_port: int = 4789,
        ready: bool = True,
        public_key: str = "",
    ) -> None: ...

    def remove_peer(self, name: str) -> None: ...

    def set_service(
        self, key: str, entry: ServiceEntry, backends: dict[str, list[Backend]]
    ) -> None: ...

    def remove_service(self, key: str) -> None: ...


class ServiceCache(Protocol):
    """The watch cache a Service is read from when one of its slices changes."""

    def get(self, kind: str, namespace: str, name: str) -> Any | None: ...


class NodeTables:
    """Watched Nodes, Services and EndpointSlices -> the router's peers and service rules.

    Objects in (``apply``, one informer change at a time), router calls out; no I/O.  Keeps
    what the router does not: each service's slices (indexed by service, so 10,000 services
    do not make every event O(n)) and the underlay IP -> node name map the fault injector names
    peers by."""

    def __init__(
        self,
        node_name: str,
        router: RouteSink,
        services: ServiceCache,
        backend: str = "vxlan",
        on_mismatch: Callable[[str, str], None] | None = None,
        on_bgp_peers: Callable[[dict[str, str]], None] | None = None,
    ) -> None:
        self.node_name = node_name
        self.router = router
        self.services = services
        self.backend = backend
        self.peer_names: dict[str, str] = {}  # underlay IP -> node name, for per-peer faults
        # Peers publishing another backend get no route (their packets would be garbage to
        # them): node name -> their backend; ``on_mismatch(name, backend)`` once per change.
        self.mismatched: dict[str, str] = {}
        self._on_mismatch = on_mismatch
        # Backend bgp: the router gets no peer routes (BGP supplies them); the BGP speaker
        # gets the peers' underlay addresses (node name -> IP), as Calico's mesh is built.
        self.bgp_peers: dict[str, str] = {}
        self._on_bgp_peers = on_bgp_peers
        # (namespace, service) -> {slice name: slice}
        self._slices: dict[tuple[str, str], dict[str, pb.EndpointSlice]] = {}

    def apply(self, type_: str, kind: str, obj: Any, old: Any | None) -> bool:
        """One watch event (ADDED / MODIFIED / DELETED); True when a Service or its endpoints
        changed, so NodePort listeners may need an update.  Other kinds are ignored."""
        if kind == "Node":
            self._apply_node(type_, obj)
            return False
        if kind == "Service":
            self._apply_service(obj.metadata.namespace, obj.metadata.name)
            return True
        if kind == "EndpointSlice":
            self._index_slice(type_, obj, old)
            if old is not None and old.service_name != obj.service_name:
                self._apply_service(old.metadata.namespace, old.service_name)
            self._apply_service(obj.metadata.namespace, obj.service_name)
            return True
        return False

    def peer_name(self, ip: str) -> str:
        """The node name of a peer's underlay IP (the IP itself when unknown)."""
        return self.peer_names.get(ip, ip)

    def slices_of(self, namespace: str, service: str) -> list[pb.EndpointSlice]:
        return list(self._slices.get((namespace, service), {}).values())

    def _index_slice(self, type_: str, obj: pb.EndpointSlice, old: pb.EndpointSlice | None) -> None:
        name = obj.metadata.name
        for s in (old, obj):
            if s is not None:
                group = self._slices.get((s.metadata.namespace, s.service_name))
                if group is not None:
                    group.pop(name, None)
                    if not group:
                        del self._slices[(s.metadata.namespace, s.service_name)]
        if type_ != "DELETED":
            self._slices.setdefault((obj.metadata.namespace, obj.service_name), {})[name] = obj

    def _apply_node(self, type_: str, node: pb.Node) -> None:
        peer = peer_of(node, self.node_name)
        if type_ == "DELETED" or peer is None:
            if node.metadata.name != self.node_name:
                self.router.remove_peer(node.metadata.name)
                self.peer_names.pop(node.internal_ip, None)
                self.mismatched.pop(node.metadata.name, None)
                self._set_bgp_peer(node.metadata.name, None)
            return
        if peer.backend != self.backend:
            self.router.remove_peer(peer.name)
            if self.mismatched.get(peer.name) != peer.backend:
                self.mismatched[peer.name] = peer.backend
                log.warning("node %s uses backend %s, this node %s: no route to it",
                            peer.name, peer.backend, self.backend)  # fmt: skip
                if self._on_mismatch is not None:
                    self._on_mismatch(peer.name, peer.backend)
            return
        self.mismatched.pop(peer.name, None)
        self.peer_names[peer.underlay_ip] = peer.name
        if self.backend == "bgp":  # the router learns only which pod sources are a node's
            self._set_bgp_peer(peer.name, peer.underlay_ip)
        try:
            self.router.set_peer(peer.name, peer.pod_cidr, peer.underlay_ip, peer.vtep_mac,
                                 peer.vxlan_port, peer.ready, peer.public_key)  # fmt: skip
        except ConfigError as exc:
            log.warning("ignoring node %s: %s", peer.name, exc.message)

    def _set_bgp_peer(self, name: str, ip: str | None) -> None:
        if self.backend != "bgp" or self.bgp_peers.get(name) == ip:
            return
        if ip is None:
            del self.bgp_peers[name]
        else:
            self.bgp_peers[name] = ip
        if self._on_bgp_peers is not None:
            self._on_bgp_peers(dict(self.bgp_peers))

    def _apply_service(self, namespace: str, name: str) -> None:
        key = service_key(namespace, name)
        svc = self.services.get("Service", namespace, name)
        if svc is not None and is_agent_owned(svc):
            return  # kube-dns stays the node-local forwarder
        if svc is None or not is_proxied(svc):
            self.router.remove_service(key)
            return
        entry = service_entry(svc)
        try:
            self.router.set_service(key, entry, backends_of(entry, self.slices_of(namespace, name)))
        except ConfigError as exc:
            log.warning("service %s not proxied: %s", key, exc.message)
            self.router.remove_service(key)
