"""The node's route tables: local pods by IP, peer nodes by podCIDR prefix (sans-I/O).

Like flannel's VXLAN backend, every peer node contributes one route (its podCIDR -> its VTEP
IP and MAC, from the Node object) and the lookup is exact on the prefix octets of the
destination (a /24 podCIDR is keyed by its first three octets), so it costs one dict lookup per
distinct prefix length (normally one).  ``Router`` composes this with
the service NAT and the verdicts into the packet pipeline.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import Enum
from typing import Any

from knemu.config import CLUSTER_CIDR, SERVICE_CIDR
from knemu.errors import ConfigError
from knemu.node_agent import events as ev
from knemu.node_agent.dataplane import backends
from knemu.proto import wire


class OutKind(Enum):
    """Where an output goes; each kind carries its counter and flow observation point (plain
    attributes: the hot path reads them without hashing the member)."""

    POD = ("pod", "delivered", ev.POINT_TO_POD)  # to: the pod's port id
    HOST = ("host", "to_host", ev.POINT_TO_STACK)  # to: None (the node's host TUN)
    UNDERLAY = ("underlay", "encapsulated", ev.POINT_ENCAP)  # to: the peer's (ip, port)

    def __init__(self, label: str, stat: str, point: str) -> None:
        self.label = label
        self.stat = stat
        self.point = point


# What the router returns for a packet it forwards or answers: (kind, to, data), ``data`` going
# to ``to`` (a pod port id, None for the host, or the peer's underlay address) by way of
# ``kind``.  A plain tuple on purpose: a NamedTuple costs ~150 ns more per packet to build
# (even through tuple.__new__), 6 % of bench/bench_router.py's plain forwarding.
Output = tuple[OutKind, Any, bytes | bytearray]

OUT_POD = OutKind.POD
OUT_HOST = OutKind.HOST
OUT_UNDERLAY = OutKind.UNDERLAY

# Where a packet came from; the same strings are the flow events' observation points.
FROM_POD = ev.POINT_FROM_POD
FROM_HOST = ev.POINT_FROM_HOST
FROM_UNDERLAY = ev.POINT_DECAP
ETH_IPV4 = b"\x08\x00"


@dataclass(frozen=True)
class Peer:
    """A peer node's route: its podCIDR prefix octets, VTEP address, the bytes the backend
    puts in front of every packet sent to it (``encap``: VXLAN's 22, IP-in-IP's none; ``o``
    their length) and the underlay destination (``addr``)."""

    name: str
    pod_cidr: str
    underlay_ip: str
    vtep_mac: str
    vxlan_port: int
    ready: bool
    prefix: bytes
    encap: bytes
    addr: tuple[str, int]
    o: int


def prefix_of(cidr: str, what: str) -> bytes:
    """The leading octets of a podCIDR, the key of the route dict (prefix length 8/16/24)."""
    try:
        net = ipaddress.IPv4Network(cidr)
    except ValueError as exc:
        raise ConfigError(f"{what}: {cidr!r} is not an IPv4 CIDR ({exc})") from None
    if net.prefixlen not in (8, 16, 24):
        raise ConfigError(f"{what}: {cidr} must be a /8, /16 or /24 (node podCIDRs are /24)")
    return net.network_address.packed[: net.prefixlen // 8]


def net_mask(cidr: str, what: str) -> tuple[int, int]:
    """(network, netmask) as integers, for an AND-and-compare membership test."""
    try:
        net = ipaddress.IPv4Network(cidr)
    except ValueError as exc:
        raise ConfigError(f"{what}: {cidr!r} is not an IPv4 CIDR ({exc})") from None
    return int(net.network_address), int(net.netmask)


@dataclass(frozen=True)
class LocalNode:
    """This node as the data plane sees it (node-N: podCIDR 10.244.N.0/24, gateway .1)."""

    name: str
    underlay_ip: str
    vtep_mac: str
    pod_cidr: str
    gateway_ip: str
    vni: int = 1
    vxlan_port: int = 4789
    mtu: int = 1450
    backend: str = "vxlan"  # knemu.node_agent.dataplane.backends.BACKENDS
    vxlan_source_ports: tuple[int, int] = (49152, 65535)  # RFC 7348 section 5
    vxlan_df: str = "unset"  # outer DF as Linux vxlan's ``df``: unset (its default) | set
    encryption: str = "none"  # backends.ENCRYPTIONS: "wireguard" seals every frame to a peer
    cluster_cidr: str = CLUSTER_CIDR
    service_cidr: str = SERVICE_CIDR


def _pod_ip(ip: str, port_id: Any) -> bytes:
    try:
        return wire.ip_to_bytes(ip)
    except ValueError as exc:
        raise ConfigError(f"local pod (port {port_id!r}): {exc}; give the pod's IPv4") from None


class RouteTable:
    """Pods and peers of one node.  The router reads the dicts (and ``prefix_lens``) directly
    on its hot path, so they are mutated in place and never replaced."""

    def __init__(self, node: LocalNode, keys: backends.KeyPair | None = None) -> None:
        self.node = node
        try:
            self.mac = wire.mac_to_bytes(node.vtep_mac)
            wire.ip_to_bytes(node.gateway_ip)
        except ValueError as exc:
            raise ConfigError(f"node {node.name}: {exc}; fix the agent's node settings") from None
        self.backend = backends.create(
            node.backend,
            vni=node.vni,
            vtep_mac=node.vtep_mac,
            vxlan_port=node.vxlan_port,
            vxlan_source_ports=node.vxlan_source_ports,
            vxlan_df=node.vxlan_df,
            node=node.name,
            encryption=node.encryption,
            keys=keys,
        )
        # --encryption wireguard: peers' keys go to the backend's sessions
        self.cipher = self.backend if isinstance(self.backend, backends.WireguardBackend) else None
        if not 576 <= node.mtu <= 65535:
            raise ConfigError(f"node {node.name}: mtu {node.mtu} must be 576..65535")
        self.own_prefix = prefix_of(node.pod_cidr, f"node {node.name} pod_cidr")
        self.pods: dict[bytes, Any] = {}  # pod IP -> port id
        self.pod_ips: dict[Any, bytes] = {}  # port id -> pod IP (anti-spoofing)
        self.peers: dict[str, Peer] = {}
        self.by_prefix: dict[bytes, Peer] = {}  # podCIDR prefix octets -> peer
        self.prefix_lens: list[int] = []  # distinct prefix lengths, longest first
        self.peer_by_ip: dict[str, Peer] = {}
        # Backend bgp: the kernel routes (BGP's); peers' podCIDRs only say which pod source
        # addresses may arrive from the underlay (a prefix of no current node is dropped).
        self.native = node.backend == "bgp"
        self.source_prefixes: dict[bytes, Peer] = {}
        self.source_prefix_lens: list[int] = []

    # -- updates --------------------------------------------------------------------------------

    def set_peer(
        self,
        name: str,
        pod_cidr: str,
        underlay_ip: str,
        vtep_mac: str,
        vxlan_port: int = 4789,
        ready: bool = True,
        public_key: str = "",
    ) -> None:
        """Route ``pod_cidr`` to a peer node's VTEP.  ConfigError names the peer and field.

        ``ready`` is recorded for the table only: like flannel, the route stays while the Node
        object exists; a NotReady node's endpoints leave services through the EndpointSlices.
        ``public_key``: the peer's WireGuard key (``--encryption wireguard``; empty: none)."""
        prefix = prefix_of(pod_cidr, f"peer {name} pod_cidr")
        try:
            wire.mac_to_bytes(vtep_mac)
            wire.ip_to_bytes(underlay_ip)
        except ValueError as exc:
            raise ConfigError(f"peer {name}: {exc}") from None
        if prefix == self.own_prefix or name == self.node.name:
            raise ConfigError(
                f"peer {name} ({pod_cidr}) is this node ({self.node.name}, "
                f"{self.node.pod_cidr}); a node is never its own peer: skip it"
            )
        old = self._unlink(name)  # the session (and its counters) stays for the same address
        if old is not None and old.underlay_ip != underlay_ip and self.cipher is not None:
            self.cipher.remove_peer(old.underlay_ip)
        if self.cipher is not None:
            try:
                self.cipher.set_peer_key(underlay_ip, public_key)
            except ValueError as exc:
                raise ConfigError(f"peer {name}: {exc}") from None
        link = self.backend.peer_link(backends.PeerAddress(underlay_ip, vtep_mac, vxlan_port))
        peer = Peer(
            name,
            pod_cidr,
            underlay_ip,
            vtep_mac,
            vxlan_port,
            ready,
            prefix,
            link.headroom,
            link.destination,
            len(link.headroom),
        )
        self.peers[name] = peer
        if self.native:
            self.source_prefixes[prefix] = peer
            self.source_prefix_lens[:] = sorted({len(p) for p in self.source_prefixes})
            return
        self.by_prefix[prefix] = peer
        self.peer_by_ip[underlay_ip] = peer
        self.prefix_lens[:] = sorted({len(p) for p in self.by_prefix}, reverse=True)

    def remove_peer(self, name: str) -> None:
        """Forget a peer node (deleted or gone): its podCIDR is no longer routed."""
        peer = self._unlink(name)
        cipher = self.cipher
        if peer is not None and cipher is not None and peer.underlay_ip not in self.peer_by_ip:
            cipher.remove_peer(peer.underlay_ip)

    def _unlink(self, name: str) -> Peer | None:
        peer = self.peers.pop(name, None)
        if peer is None:
            return None
        if self.by_prefix.get(peer.prefix) is peer:
            del self.by_prefix[peer.prefix]
        if self.peer_by_ip.get(peer.underlay_ip) is peer:
            del self.peer_by_ip[peer.underlay_ip]
        if self.source_prefixes.get(peer.prefix) is peer:
            del self.source_prefixes[peer.prefix]
            self.source_prefix_lens[:] = sorted({len(p) for p in self.source_prefixes})
        self.prefix_lens[:] = sorted({len(p) for p in self.by_prefix}, reverse=True)
        return peer

    def add_local_pod(self, ip: str, port_id: Any) -> None:
        """Deliver ``ip`` to ``port_id`` (any hashable the adapter uses for the pod's TUN);
        a port or an IP given again replaces its previous mapping."""
        raw = _pod_ip(ip, port_id)
        self.remove_local_pod(ip)
        previous = self.pod_ips.get(port_id)
        if previous is not None:
            self.remove_local_pod(wire.bytes_to_ip(previous))
        self.pods[raw] = port_id
        self.pod_ips[port_id] = raw

    def remove_local_pod(self, ip: str) -> None:
        """Stop delivering to a pod's IP (its sandbox is gone); unknown IPs are ignored."""
        raw = _pod_ip(ip, None)
        port_id = self.pods.pop(raw, None)
        if port_id is not None and self.pod_ips.get(port_id) == raw:
            del self.pod_ips[port_id]

    def snapshot(self) -> dict[str, Any]:
        """Peers and local pods, JSON-serialisable."""
        peers = [
            {
                "name": p.name,
                "pod_cidr": p.pod_cidr,
                "underlay_ip": p.underlay_ip,
                "vtep_mac": p.vtep_mac,
                "vxlan_port": p.vxlan_port,
                "ready": p.ready,
            }
            for p in sorted(self.peers.values(), key=lambda p: p.name)
        ]
        pods = {wire.bytes_to_ip(ip): str(port) for ip, port in self.pods.items()}
        out: dict[str, Any] = {"peers": peers, "local_pods": pods}
        if self.cipher is not None:
            out["wireguard"] = self.cipher.snapshot()
        return out
