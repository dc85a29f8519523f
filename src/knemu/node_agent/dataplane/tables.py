"""Watched objects -> data-plane tables (sans-I/O): what the agent tells the router and proxies.

kube-proxy builds its rules from Services and EndpointSlices
(https://kubernetes.io/docs/reference/networking/virtual-ips/); flannel builds its routes and
VTEP neighbours from Node objects (podCIDR plus the ``flannel.alpha.coreos.com/backend-data``
VtepMAC annotation, here ``Node.vtep_mac``).  These functions do that translation and nothing
else, so they are tested without sockets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from knemu.config import DNS_SERVICE_IP
from knemu.node_agent.kubeproxy.nodeport import NodePortRule
from knemu.node_agent.kubeproxy.service_table import Backend, ServiceEntry, ServicePortEntry
from knemu.proto import knemu_pb2 as pb

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


@dataclass(frozen=True)
class PeerSpec:
    name: str
    pod_cidr: str
    underlay_ip: str
    vtep_mac: str
    vxlan_port: int
    ready: bool


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
    )


def wants_pod(pod: pb.Pod, my_name: str) -> bool:
    """Should this node keep ``pod``? Bound here and not being deleted.  A finished pod is kept
    (not restarted) until it is deleted, so that its logs stay readable, as the kubelet does."""
    return pod.node_name == my_name and not pod.metadata.deleting


def should_start(pod: pb.Pod, my_name: str) -> bool:
    """Should this node start ``pod`` when it does not run it? Wanted and not finished."""
    return wants_pod(pod, my_name) and pod.phase not in ("Succeeded", "Failed")
