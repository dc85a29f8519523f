"""The encapsulation step of the router as a pluggable, sans-I/O backend.

Everything above this step (kube-proxy NAT, NetworkPolicy, flows, trace, faults) is the same
for every backend; a backend only says how a routed inner IP packet reaches a peer node over
the underlay and how a datagram read from the underlay becomes an inner packet again.

The per-packet cost stays what VXLAN alone cost: ``peer_link`` precomputes, once per peer, the
bytes put in front of every packet (``headroom``) and the underlay destination, so the router's
encapsulation is one ``bytearray`` concatenation; ``decapsulate`` is one bound-method call.
``encapsulate`` is the same transformation as a pure function, for tests and tools.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from knemu.node_agent.events import DropReason

# Which underlay socket a backend needs (the adapter maps these to socket(2) arguments; this
# module imports no socket).  "udp": a datagram socket on the backend's port; "ip": a raw
# IPv4 socket for ``ip_protocol`` (the kernel writes the outer IPv4 header).
TRANSPORT_UDP = "udp"
TRANSPORT_IP = "ip"


@dataclass(frozen=True)
class PeerAddress:
    """What a peer node publishes for the underlay (from its Node object)."""

    underlay_ip: str
    vtep_mac: str = ""
    port: int = 0


@dataclass(frozen=True)
class PeerLink:
    """Precomputed per peer: ``headroom`` goes in front of every inner packet sent to
    ``destination`` (an (ip, port) the underlay socket sends to; port 0 for raw IP)."""

    headroom: bytes
    destination: tuple[str, int]


class Backend(Protocol):
    """One encapsulation (VXLAN, IP-in-IP, native routing)."""

    @property
    def name(self) -> str: ...

    @property
    def overhead_bytes(self) -> int:
        """Underlay bytes per packet beyond the inner IP packet (pod MTU = underlay - this)."""
        ...

    @property
    def headroom_bytes(self) -> int:
        """Bytes in front of the inner packet in what ``encapsulate`` returns."""
        ...

    @property
    def transport(self) -> str: ...  # TRANSPORT_UDP | TRANSPORT_IP

    @property
    def port(self) -> int: ...  # UDP port (udp) or IP protocol number (ip)

    def peer_link(self, peer: PeerAddress) -> PeerLink: ...

    def encapsulate(self, packet: bytes, peer: PeerAddress) -> tuple[bytes, tuple[str, int]]:
        """The datagram the underlay socket sends for ``packet``, and where."""
        ...

    def decapsulate(self, datagram: bytes, source: tuple[str, int]) -> bytes | DropReason:
        """The inner IP packet of a datagram read from the underlay socket, or why not.
        Never raises on any input."""
        ...
