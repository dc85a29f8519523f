"""Native routing (BGP): pod packets cross the underlay unencapsulated, as with Calico's BGP
mode.  The router hands a packet for another node's podCIDR to the node's own kernel (the host
TUN), whose routing table holds the routes BIRD learned over BGP (``bird``): next hop the
announcing node's underlay address, on the underlay interface.  Arriving pod packets are routed
by the receiving kernel into its host TUN like any other packet for the cluster CIDR.  So no
per-peer state lives in the router: the routes are BGP's, not the api-server's."""

from __future__ import annotations

from knemu.node_agent.dataplane.backends.base import PeerAddress, PeerLink
from knemu.node_agent.events import DropReason

TRANSPORT_NONE = "none"  # no underlay socket of the agent's own: the kernel forwards


class NativeBackend:
    name = "bgp"
    overhead_bytes = 0
    headroom_bytes = 0
    transport = TRANSPORT_NONE
    port = 0

    def peer_link(self, peer: PeerAddress) -> PeerLink:
        return PeerLink(b"", (peer.underlay_ip, 0))

    def encapsulate(self, packet: bytes, peer: PeerAddress) -> tuple[bytes, tuple[str, int]]:
        return packet, (peer.underlay_ip, 0)

    def decapsulate(self, datagram: bytes, source: tuple[str, int]) -> bytes | DropReason:
        """Never called in operation (no underlay socket); the packet is its own inner."""
        if len(datagram) < 20:
            return DropReason.TRUNCATED
        return datagram
