"""IP-in-IP, RFC 2003: the inner IPv4 packet is the payload of an outer IPv4 header with
protocol 4 between the nodes' underlay addresses (Calico's IPIP mode, Linux ``ipip``/tunl0).

The underlay socket is a raw IPv4 socket for protocol 4: on send the kernel writes the outer
header (so the headroom is empty and the per-packet cost is VXLAN's minus 22 bytes of copying);
on receive a raw socket hands over the whole outer packet, which ``decapsulate`` strips.
"""

from __future__ import annotations

from knemu.node_agent.dataplane.backends.base import TRANSPORT_IP, PeerAddress, PeerLink
from knemu.node_agent.events import DropReason
from knemu.proto import wire

IPPROTO_IPIP = 4
OVERHEAD_BYTES = 20  # one outer IPv4 header without options: pod MTU = underlay MTU - 20


class IpipBackend:
    name = "ipip"
    overhead_bytes = OVERHEAD_BYTES
    headroom_bytes = 0  # the kernel writes the outer IPv4 header
    transport = TRANSPORT_IP
    port = IPPROTO_IPIP

    def peer_link(self, peer: PeerAddress) -> PeerLink:
        return PeerLink(b"", (peer.underlay_ip, 0))

    def encapsulate(self, packet: bytes, peer: PeerAddress) -> tuple[bytes, tuple[str, int]]:
        return packet, (peer.underlay_ip, 0)

    def decapsulate(self, datagram: bytes, source: tuple[str, int]) -> bytes | DropReason:
        """RFC 2003 section 3.1: the outer header's protocol is 4; its options are skipped.
        The outer header checksum was checked by the kernel; the inner one by the router."""
        n = len(datagram)
        if n < 40:
            return DropReason.TRUNCATED
        b0 = datagram[0]
        if b0 >> 4 != 4:
            return DropReason.NOT_IPV4
        ihl = (b0 & 0x0F) << 2
        if ihl < 20 or n < ihl + 20:
            return DropReason.TRUNCATED
        if datagram[9] != IPPROTO_IPIP:
            return DropReason.BAD_OUTER_HEADER
        return datagram[ihl:]


def encode_ipip(src: str, dst: str, inner: bytes, ttl: int = 64, ident: int = 0) -> bytes:
    """The whole outer packet as the kernel sends it (RFC 2003 section 3.1: TOS copied from
    the inner header; DF not set, so the underlay may fragment): for tests and captures."""
    return wire.encode_ipv4(
        wire.IPv4Packet(
            src=src,
            dst=dst,
            proto=IPPROTO_IPIP,
            payload=inner,
            ttl=ttl,
            ident=ident,
            tos=inner[1] if len(inner) > 1 else 0,
            flags_fragment=0,
        )
    )
