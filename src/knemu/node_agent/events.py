"""Flow events: what the router decided about one packet, at one observation point.

Small frozen dataclasses in the style of aioquic's ``quic/events.py``.  The router builds them
only when a ``flow_sink`` is set, so they cost nothing on the hot path otherwise.  The
observation points follow Cilium Hubble's vocabulary (from-endpoint, to-endpoint, to-stack,
to-overlay, from-overlay) shortened to ours.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

# Observation points: where in the node the packet was seen when the decision was made.
POINT_FROM_POD = "from-pod"  # read from a pod's TUN (its eth0)
POINT_FROM_HOST = "from-host"  # read from the node's host TUN (the node's own kernel)
POINT_TO_POD = "to-pod"  # written to a local pod's TUN
POINT_TO_STACK = "to-stack"  # written to the host TUN (gateway, node IP, outside the cluster)
POINT_ENCAP = "encap"  # VXLAN-encapsulated to a peer node
POINT_DECAP = "decap"  # received from a peer node over VXLAN

# Verdicts, as Hubble names them.
VERDICT_FORWARDED = "FORWARDED"
VERDICT_DROPPED = "DROPPED"
VERDICT_TRANSLATED = "TRANSLATED"
VERDICT_REFUSED = "REFUSED"  # answered with TCP RST or ICMP unreachable instead of forwarding

PROTO_NAMES = {1: "ICMP", 6: "TCP", 17: "UDP"}


@dataclass(frozen=True, slots=True)
class FiveTuple:
    """The IP 5-tuple of the packet as seen at the observation point (ports 0 for ICMP)."""

    protocol: str
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int

    def __str__(self) -> str:
        return f"{self.protocol} {self.src_ip}:{self.src_port} -> {self.dst_ip}:{self.dst_port}"


@dataclass(frozen=True, slots=True)
class OuterHeader:
    """The underlay header around the packet, for encap/decap events: VXLAN in UDP, the
    outer IPv4 header of IP-in-IP (``encapsulation`` "ipip": no port, no VNI), or WireGuard's
    sealed message in UDP (``encapsulation`` "wireguard": no VNI)."""

    src_ip: str
    dst_ip: str
    dst_port: int
    vni: int
    encapsulation: str = "vxlan"


@dataclass(frozen=True, slots=True)
class FlowEvent:
    """Base of every flow event; ``node`` is the node that observed it, ``time`` its clock."""

    time: float
    node: str
    point: str
    flow: FiveTuple | None  # None when the packet was too malformed to read one

    verdict = "UNKNOWN"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, one NDJSON line of ``GET /flows``."""
        out: dict[str, Any] = asdict(self)
        out["verdict"] = self.verdict
        out["type"] = type(self).__name__
        if self.flow is not None:
            out["summary"] = str(self.flow)
        return out


@dataclass(frozen=True, slots=True)
class FlowForwarded(FlowEvent):
    """The packet left towards ``point`` (to-pod, to-stack or encap)."""

    outer: OuterHeader | None = None  # set for encap and for packets that arrived by decap
    verdict = VERDICT_FORWARDED


@dataclass(frozen=True, slots=True)
class FlowTranslated(FlowEvent):
    """kube-proxy rewrote the packet: ``nat`` is "dnat", "unnat", "snat" or "unsnat"."""

    nat: str = "dnat"
    translated: FiveTuple | None = None  # the 5-tuple after the rewrite
    service: str = ""  # "ns/name:port"
    verdict = VERDICT_TRANSLATED


class DropReason(StrEnum):
    """Why the router dropped or answered a packet instead of forwarding it.  The values are
    the names in counters (``drop_<reason>``, ``refused_<reason>``), metrics labels and flow
    events, so text output is unchanged by the enum."""

    # malformed or unexpected input
    TRUNCATED = "truncated"
    NOT_IPV4 = "not_ipv4"
    BAD_CHECKSUM = "bad_checksum"
    BAD_VXLAN_HEADER = "bad_vxlan_header"
    WRONG_VNI = "wrong_vni"
    BAD_OUTER_HEADER = "bad_outer_header"  # IP-in-IP: outer protocol is not 4
    WRONG_MAC = "wrong_mac"
    UNKNOWN_PEER = "unknown_peer"  # underlay source is not a current node
    # --encryption wireguard: a frame whose origin is not proven
    UNAUTHENTICATED = "unauthenticated"  # AEAD tag does not verify under the sender's key
    REPLAYED = "replayed"  # a counter already accepted (or older than the window)
    NO_PEER_KEY = "no_peer_key"  # the peer node published no WireGuard public key
    UNKNOWN_PORT = "unknown_port"
    SPOOFED_SOURCE = "spoofed_source"
    # routing
    UNKNOWN_POD = "unknown_pod"
    NO_ROUTE = "no_route"
    TTL_EXCEEDED = "ttl_exceeded"
    TOO_BIG = "too_big"
    # services and policy
    NO_SERVICE = "no_service"
    NO_ENDPOINTS = "no_endpoints"
    NO_LOCAL_ENDPOINTS = "no_local_endpoints"
    STALE_BACKEND = "stale_backend"
    NAT_COLLISION = "nat_collision"
    POLICY_DENIED = "policy_denied"
    SOURCE_RANGE = "load_balancer_source_range"  # not in spec.loadBalancerSourceRanges


@dataclass(frozen=True, slots=True)
class FlowDropped(FlowEvent):
    """The packet was dropped; ``reason`` is the counter name (truncated, no_route, ...)."""

    reason: str = ""
    outer: OuterHeader | None = None
    verdict = VERDICT_DROPPED


@dataclass(frozen=True, slots=True)
class FlowRefused(FlowEvent):
    """The router answered instead of forwarding (TCP RST, ICMP unreachable/time exceeded)."""

    reason: str = ""  # no_endpoints, no_service, ttl_exceeded, too_big, stale_backend
    reply: str = ""  # "tcp-rst", "icmp-port-unreachable", ...
    service: str = ""
    verdict = VERDICT_REFUSED


def flow_of(packet: bytes | bytearray) -> FiveTuple | None:
    """Best-effort 5-tuple of a raw IPv4 packet, for events (not on the hot path)."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    proto = packet[9]
    src = ".".join(str(b) for b in packet[12:16])
    dst = ".".join(str(b) for b in packet[16:20])
    sport = dport = 0
    if proto in (6, 17) and len(packet) >= ihl + 4:
        sport = packet[ihl] << 8 | packet[ihl + 1]
        dport = packet[ihl + 2] << 8 | packet[ihl + 3]
    return FiveTuple(PROTO_NAMES.get(proto, str(proto)), src, sport, dst, dport)
