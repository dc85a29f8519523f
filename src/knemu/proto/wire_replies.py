"""The packets the router answers with: TCP RST for a closed port, ICMP errors, frag-needed.

Part of ``knemu.proto.wire`` (import it from there).  Each builder decodes only as much of
the offending packet as it needs and returns None where the RFCs forbid a reply (a RST for
a RST, an ICMP error about an ICMP error, a fragment or a broadcast source).
"""

from __future__ import annotations

from knemu.errors import MalformedPacket
from knemu.proto.wire_codecs import (
    ICMP_ERROR_TYPES,
    IP_FRAG_OFFSET_MASK,
    PROTO_ICMP,
    PROTO_TCP,
    TCP_ACK,
    TCP_RST,
    IcmpMessage,
    IPv4Packet,
    TcpSegment,
    decode_ipv4,
    decode_tcp,
    encode_icmp,
    ip_packet,
    tcp_packet,
)


def tcp_reset_for(packet: bytes | bytearray, ttl: int = 64) -> bytes | None:
    """The RST a closed port sends for ``packet`` (RFC 9293 section 3.10.7.1), from its
    destination back to its source; None for a RST (never answer a reset) or a non-TCP packet."""
    try:
        ip = decode_ipv4(packet, verify=False)
        if ip.proto != PROTO_TCP or ip.flags_fragment & IP_FRAG_OFFSET_MASK:
            return None
        seg = decode_tcp(ip.payload)
    except MalformedPacket:
        return None
    if seg.flags & TCP_RST:
        return None
    if seg.flags & TCP_ACK:
        reply = TcpSegment(seg.dst_port, seg.src_port, seq=seg.ack, flags=TCP_RST, window=0)
    else:
        ack = (seg.seq + seg.seg_len) & 0xFFFFFFFF
        reply = TcpSegment(seg.dst_port, seg.src_port, ack=ack, flags=TCP_RST | TCP_ACK, window=0)
    return tcp_packet(ip.dst, ip.src, reply, ttl=ttl)


def _may_answer_with_icmp(ip: IPv4Packet) -> bool:
    """RFC 1122 section 3.2.2 / RFC 1812 section 4.3.2.7: no ICMP error about an ICMP error,
    a non-first fragment, or a packet from a broadcast, multicast or unspecified source."""
    if ip.flags_fragment & IP_FRAG_OFFSET_MASK:
        return False
    first = int(ip.src.split(".")[0])
    if ip.src in ("0.0.0.0", "255.255.255.255") or 224 <= first <= 239:
        return False
    return not (ip.proto == PROTO_ICMP and ip.payload[:1] and ip.payload[0] in ICMP_ERROR_TYPES)


def icmp_error_for(
    packet: bytes | bytearray, icmp_type: int, code: int, src: str, rest: bytes = b"\0\0\0\0"
) -> bytes | None:
    """An ICMP error about ``packet`` from ``src`` back to its source, quoting as much of it as
    fits in 576 bytes (RFC 1812 section 4.3.2.3; RFC 792 asks for at least header + 8 bytes).
    None where no error may be sent."""
    try:
        ip = decode_ipv4(packet, verify=False)
    except MalformedPacket:
        return None
    if not _may_answer_with_icmp(ip):
        return None
    total = packet[2] << 8 | packet[3]
    quoted = bytes(packet[: min(total, 576 - 28)])
    body = encode_icmp(IcmpMessage(icmp_type, code, rest, quoted))
    return ip_packet(src, ip.src, PROTO_ICMP, body)


def frag_needed_rest(mtu: int) -> bytes:
    """Rest-of-header of "fragmentation needed": unused 16 bits, next-hop MTU (RFC 1191)."""
    return b"\0\0" + mtu.to_bytes(2, "big")
