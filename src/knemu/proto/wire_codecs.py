"""IPv4, TCP, UDP, ICMP, Ethernet II and VXLAN headers as pure encode/decode functions.

Part of ``knemu.proto.wire`` (import it from there).  Each header is a frozen dataclass with
an ``encode_*`` that computes its checksum and a ``decode_*`` that returns the dataclass or
raises ``MalformedPacket`` naming the drop reason; the ``*_packet`` shorthands build whole
IPv4 packets for tests, probes and the replies the router sends.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from knemu.errors import MalformedPacket
from knemu.proto.wire_checksum import bytes_to_ip, checksum, ip_to_bytes, pseudo_header_sum

# IPv4 (RFC 791 section 3.1) and transport protocol numbers (IANA).
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
IPV4_MIN_HEADER = 20
IP_FLAG_DF = 0x4000
IP_FLAG_MF = 0x2000
IP_FRAG_OFFSET_MASK = 0x1FFF

# TCP flags (RFC 9293 section 3.1).
TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10

# ICMP (RFC 792) types and destination-unreachable codes.
ICMP_ECHO_REPLY = 0
ICMP_DEST_UNREACH = 3
ICMP_ECHO_REQUEST = 8
ICMP_TIME_EXCEEDED = 11
ICMP_NET_UNREACH = 0
ICMP_HOST_UNREACH = 1
ICMP_PORT_UNREACH = 3
ICMP_FRAG_NEEDED = 4
ICMP_ERROR_TYPES = frozenset({3, 4, 5, 11, 12})

# Ethernet II and VXLAN (RFC 7348 section 5).
ETHERTYPE_IPV4 = 0x0800
ETHERNET_HEADER = 14
VXLAN_HEADER = 8
VXLAN_FLAG_I = 0x08  # "I" flag: the VNI is valid; every other bit is reserved
VXLAN_OVERHEAD = 50  # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
BROADCAST_MAC = b"\xff" * 6


# -- IPv4 (RFC 791) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class IPv4Packet:
    src: str
    dst: str
    proto: int
    payload: bytes
    ttl: int = 64
    ident: int = 0
    tos: int = 0
    flags_fragment: int = IP_FLAG_DF
    options: bytes = b""
    checksum: int = 0  # as decoded; encode computes it


def encode_ipv4(pkt: IPv4Packet) -> bytes:
    """Serialise with a freshly computed header checksum (RFC 791 section 3.1)."""
    if len(pkt.options) % 4 or len(pkt.options) > 40:
        raise ValueError("IPv4 options must be a multiple of 4 bytes and at most 40")
    ihl = 5 + len(pkt.options) // 4
    total = ihl * 4 + len(pkt.payload)
    header = (
        struct.pack(
            "!BBHHHBBH4s4s",
            0x40 | ihl,
            pkt.tos,
            total,
            pkt.ident,
            pkt.flags_fragment,
            pkt.ttl,
            pkt.proto,
            0,
            ip_to_bytes(pkt.src),
            ip_to_bytes(pkt.dst),
        )
        + pkt.options
    )
    csum = checksum(header)
    return header[:10] + csum.to_bytes(2, "big") + header[12:] + pkt.payload


def decode_ipv4(data: bytes | bytearray, verify: bool = True) -> IPv4Packet:
    """Parse one IPv4 packet; trailing bytes beyond Total Length (link padding) are ignored."""
    if len(data) < IPV4_MIN_HEADER:
        raise MalformedPacket("truncated", f"IPv4 packet of {len(data)} bytes < 20")
    if data[0] >> 4 != 4:
        raise MalformedPacket("not_ipv4", f"IP version {data[0] >> 4}, expected 4")
    ihl = (data[0] & 0x0F) * 4
    total = data[2] << 8 | data[3]
    if ihl < IPV4_MIN_HEADER or total < ihl or total > len(data):
        raise MalformedPacket("truncated", f"IPv4 IHL {ihl} / total length {total} invalid")
    if verify and checksum(data[:ihl]) != 0:
        raise MalformedPacket("bad_checksum", "IPv4 header checksum does not verify")
    return IPv4Packet(
        src=bytes_to_ip(data[12:16]),
        dst=bytes_to_ip(data[16:20]),
        proto=data[9],
        payload=bytes(data[ihl:total]),
        ttl=data[8],
        ident=data[4] << 8 | data[5],
        tos=data[1],
        flags_fragment=data[6] << 8 | data[7],
        options=bytes(data[IPV4_MIN_HEADER:ihl]),
        checksum=data[10] << 8 | data[11],
    )


def ip_packet(
    src: str, dst: str, proto: int, payload: bytes, ttl: int = 64, ident: int = 0
) -> bytes:
    """Shorthand: an IPv4 packet with DF set and no options."""
    return encode_ipv4(
        IPv4Packet(src=src, dst=dst, proto=proto, payload=payload, ttl=ttl, ident=ident)
    )


# -- transport checksums shared by TCP and UDP -------------------------------------------------


def transport_checksum(src: str, dst: str, proto: int, segment: bytes) -> int:
    """Checksum of a TCP/UDP segment (its checksum field zeroed) with the pseudo-header."""
    initial = pseudo_header_sum(ip_to_bytes(src), ip_to_bytes(dst), proto, len(segment))
    return checksum(segment, initial)


def transport_checksum_ok(packet: bytes | bytearray) -> bool:
    """Whether the TCP/UDP checksum of a whole IPv4 packet verifies (UDP 0 = none, RFC 768)."""
    ip = decode_ipv4(packet)
    if ip.proto == PROTO_UDP and len(ip.payload) >= 8 and ip.payload[6:8] == b"\0\0":
        return True
    initial = pseudo_header_sum(ip_to_bytes(ip.src), ip_to_bytes(ip.dst), ip.proto, len(ip.payload))
    return checksum(ip.payload, initial) == 0


# -- TCP (RFC 9293 section 3.1) ---------------------------------------------------------------


@dataclass(frozen=True)
class TcpSegment:
    src_port: int
    dst_port: int
    seq: int = 0
    ack: int = 0
    flags: int = TCP_SYN
    window: int = 65535
    payload: bytes = b""
    options: bytes = b""
    urgent: int = 0
    checksum: int = 0  # as decoded; encode computes it

    @property
    def seg_len(self) -> int:
        """SEG.LEN: payload octets plus one for SYN and one for FIN (RFC 9293 3.4)."""
        return len(self.payload) + bool(self.flags & TCP_SYN) + bool(self.flags & TCP_FIN)


def encode_tcp(seg: TcpSegment, src: str, dst: str) -> bytes:
    """Serialise with the checksum over the IPv4 pseudo-header (RFC 9293 3.1)."""
    if len(seg.options) % 4 or len(seg.options) > 40:
        raise ValueError("TCP options must be a multiple of 4 bytes and at most 40")
    offset = (5 + len(seg.options) // 4) << 12
    header = struct.pack(
        "!HHIIHHHH",
        seg.src_port,
        seg.dst_port,
        seg.seq & 0xFFFFFFFF,
        seg.ack & 0xFFFFFFFF,
        offset | seg.flags,
        seg.window,
        0,
        seg.urgent,
    )
    raw = header + seg.options + seg.payload
    csum = transport_checksum(src, dst, PROTO_TCP, raw)
    return raw[:16] + csum.to_bytes(2, "big") + raw[18:]


def decode_tcp(data: bytes | bytearray) -> TcpSegment:
    if len(data) < 20:
        raise MalformedPacket("truncated", f"TCP segment of {len(data)} bytes < 20")
    src_port, dst_port, seq, ack, off_flags, window, csum, urgent = struct.unpack(
        "!HHIIHHHH", bytes(data[:20])
    )
    offset = (off_flags >> 12) * 4
    if offset < 20 or offset > len(data):
        raise MalformedPacket("truncated", f"TCP data offset {offset} outside the segment")
    return TcpSegment(
        src_port=src_port,
        dst_port=dst_port,
        seq=seq,
        ack=ack,
        flags=off_flags & 0x1FF,
        window=window,
        payload=bytes(data[offset:]),
        options=bytes(data[20:offset]),
        urgent=urgent,
        checksum=csum,
    )


def tcp_packet(src: str, dst: str, seg: TcpSegment, ttl: int = 64) -> bytes:
    """Shorthand: a whole IPv4 packet carrying ``seg``."""
    return ip_packet(src, dst, PROTO_TCP, encode_tcp(seg, src, dst), ttl=ttl)


# -- UDP (RFC 768) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class UdpDatagram:
    src_port: int
    dst_port: int
    payload: bytes = b""
    checksum: int = 0  # as decoded; 0 means "no checksum"


def encode_udp(dgram: UdpDatagram, src: str, dst: str, with_checksum: bool = True) -> bytes:
    """Serialise; a computed checksum of 0 is sent as 0xFFFF, 0 meaning none (RFC 768)."""
    raw = struct.pack("!HHHH", dgram.src_port, dgram.dst_port, 8 + len(dgram.payload), 0)
    raw += dgram.payload
    if not with_checksum:
        return raw
    csum = transport_checksum(src, dst, PROTO_UDP, raw) or 0xFFFF
    return raw[:6] + csum.to_bytes(2, "big") + raw[8:]


def decode_udp(data: bytes | bytearray) -> UdpDatagram:
    if len(data) < 8:
        raise MalformedPacket("truncated", f"UDP datagram of {len(data)} bytes < 8")
    src_port, dst_port, length, csum = struct.unpack("!HHHH", bytes(data[:8]))
    if length < 8 or length > len(data):
        raise MalformedPacket("truncated", f"UDP length {length} outside the datagram")
    return UdpDatagram(src_port, dst_port, bytes(data[8:length]), csum)


def udp_packet(
    src: str, dst: str, sport: int, dport: int, payload: bytes, with_checksum: bool = True
) -> bytes:
    """Shorthand: a whole IPv4 packet carrying one UDP datagram."""
    raw = encode_udp(UdpDatagram(sport, dport, payload), src, dst, with_checksum)
    return ip_packet(src, dst, PROTO_UDP, raw)


# -- ICMP (RFC 792) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class IcmpMessage:
    type: int
    code: int
    rest: bytes = b"\0\0\0\0"  # the 4 bytes after the checksum (id/seq, unused, next-hop MTU)
    payload: bytes = b""
    checksum: int = 0  # as decoded


def encode_icmp(msg: IcmpMessage) -> bytes:
    if len(msg.rest) != 4:
        raise ValueError("ICMP rest-of-header must be 4 bytes")
    raw = bytes((msg.type, msg.code, 0, 0)) + msg.rest + msg.payload
    csum = checksum(raw)
    return raw[:2] + csum.to_bytes(2, "big") + raw[4:]


def decode_icmp(data: bytes | bytearray, verify: bool = True) -> IcmpMessage:
    if len(data) < 8:
        raise MalformedPacket("truncated", f"ICMP message of {len(data)} bytes < 8")
    if verify and checksum(data) != 0:
        raise MalformedPacket("bad_checksum", "ICMP checksum does not verify")
    return IcmpMessage(data[0], data[1], bytes(data[4:8]), bytes(data[8:]), data[2] << 8 | data[3])


# -- Ethernet II and VXLAN (RFC 7348 section 5) ------------------------------------------------


@dataclass(frozen=True)
class EthernetFrame:
    dst: bytes
    src: bytes
    ethertype: int
    payload: bytes


def encode_ethernet(frame: EthernetFrame) -> bytes:
    if len(frame.dst) != 6 or len(frame.src) != 6:
        raise ValueError("Ethernet addresses must be 6 bytes")
    return frame.dst + frame.src + frame.ethertype.to_bytes(2, "big") + frame.payload


def decode_ethernet(data: bytes | bytearray) -> EthernetFrame:
    if len(data) < ETHERNET_HEADER:
        raise MalformedPacket("truncated", f"Ethernet frame of {len(data)} bytes < 14")
    return EthernetFrame(
        bytes(data[0:6]), bytes(data[6:12]), data[12] << 8 | data[13], bytes(data[14:])
    )


def vxlan_header(vni: int) -> bytes:
    """``08 00 00 00 | VNI (24 bits) | 00``: flags with only I set, reserved bits zero."""
    if not 0 <= vni < 1 << 24:
        raise ValueError(f"VNI {vni} does not fit in 24 bits")
    return b"\x08\x00\x00\x00" + vni.to_bytes(3, "big") + b"\x00"


def encode_vxlan(vni: int, inner_frame: bytes) -> bytes:
    """The UDP payload of a VXLAN packet: header then the inner Ethernet frame."""
    return vxlan_header(vni) + inner_frame


def decode_vxlan(data: bytes | bytearray) -> tuple[int, bytes]:
    """(VNI, inner Ethernet frame).  Reserved bits are ignored on receipt, as RFC 7348 says;
    the I flag must be set."""
    if len(data) < VXLAN_HEADER:
        raise MalformedPacket("truncated", f"VXLAN payload of {len(data)} bytes < 8")
    if not data[0] & VXLAN_FLAG_I:
        raise MalformedPacket("bad_vxlan_header", "VXLAN I flag is not set (RFC 7348 section 5)")
    return int.from_bytes(data[4:7], "big"), bytes(data[8:])
