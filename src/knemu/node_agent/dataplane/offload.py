"""TCP segmentation and receive offload for TUN devices, sans-I/O (the virtio-net header).

Theory of operation.  A TUN device opened with ``IFF_VNET_HDR`` and told by ``TUNSETOFFLOAD``
that its reader copes with ``TUN_F_CSUM | TUN_F_TSO4`` lets the pod's kernel hand over TCP
"super-packets" of up to 64 KB: one IPv4 header, one TCP header, many MSS of payload, prefixed
by a ``struct virtio_net_hdr`` (virtio 1.x section 5.1.6, ``linux/virtio_net.h``) that says how
to cut it (``gso_size``) and that the TCP checksum is still to be done (``NEEDS_CSUM``: the
field holds the folded pseudo-header sum, the sum from ``csum_start`` to the end completes it).
Every write to such a device starts with the same header; one with ``gso_type`` TCPV4 delivers
a super-packet the pod's kernel takes whole, as after GRO.  This is what wireguard-go does
(``tun/offload_linux.go``) to move one TCP stream at multi-gigabit rates from userspace.

The router routes a super-packet once (one conntrack/NAT/policy lookup for ~45 segments); only
where a packet must leave as real frames -- VXLAN on the underlay, the node's own TUN --
``segment_tcp4`` cuts it as the kernel's ``tcp_gso_segment`` does: IP ID incremented, sequence
numbers advanced, FIN/PSH only on the last segment and CWR only on the first, every checksum
complete.  On the way in, ``coalesce`` is GRO (``tcp_gro_receive``): consecutive in-order
segments of one flow with identical headers but for the sequence number (and IP ID, length,
checksums) merge into one super-packet, after each segment's TCP checksum is verified -- a
corrupt segment is never hidden in a merged packet; it goes on alone for the pod to drop.

All functions take and return bytes; none raises on packet input (a header it cannot use
makes it pass the packet on unchanged or report it with ``None``).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

from knemu.proto.wire import ipv4_header_checksum

# virtio 1.x 5.1.6 / linux/virtio_net.h.  A TUN device uses the host's byte order unless told
# otherwise (TUNSETVNETLE/BE); "=" is that order.
VNET_HEADER = struct.Struct("=BBHHHH")
VNET_HEADER_BYTES = VNET_HEADER.size  # 10: no num_buffers (TUNSETVNETHDRSZ left at its default)
F_NEEDS_CSUM = 1
F_DATA_VALID = 2
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3
GSO_TCPV6 = 4
GSO_ECN = 0x80

PLAIN_HEADER = bytes(VNET_HEADER_BYTES)  # a whole packet, checksum as it stands
MAX_SUPER_BYTES = 65535  # an IPv4 total length
_TCP = 6
_FIN, _PSH, _CWR = 0x01, 0x08, 0x80
# flags that end a GRO run (SYN, RST, URG, ECE, CWR) or may only close one (FIN, PSH)
_NO_MERGE = 0x02 | 0x04 | 0x20 | 0x40 | 0x80
_ENDS_RUN = _FIN | _PSH


class VnetHeader(NamedTuple):
    flags: int
    gso_type: int
    hdr_len: int
    gso_size: int
    csum_start: int
    csum_offset: int


def parse_vnet(frame: bytes) -> tuple[VnetHeader, bytes] | None:
    """The header and the packet of a frame read from an ``IFF_VNET_HDR`` TUN; None if short."""
    if len(frame) < VNET_HEADER_BYTES:
        return None
    return VnetHeader(*VNET_HEADER.unpack_from(frame)), frame[VNET_HEADER_BYTES:]


def build_vnet(header: VnetHeader) -> bytes:
    return VNET_HEADER.pack(*header)


def tcp4_header(packet: bytes | bytearray, gso_size: int) -> bytes:
    """The virtio header for writing IPv4/TCP ``packet`` as a super-packet of ``gso_size``
    segments (its TCP checksum field must hold the pseudo-header sum: ``set_pseudo_sum``)."""
    ihl = (packet[0] & 0x0F) << 2
    hdr_len = ihl + ((packet[ihl + 12] >> 4) << 2)
    return VNET_HEADER.pack(F_NEEDS_CSUM, GSO_TCPV4, hdr_len, gso_size, ihl, 16)


def _fold_sum(data: bytes | bytearray) -> int:
    """One's-complement sum of ``data``'s 16-bit words, modulo 0xFFFF (0 is "negative zero").

    The words of a big-endian integer sum to it modulo 0xFFFF (2**16 = 1 mod 0xFFFF), so one
    C-speed remainder replaces a word loop; odd length pads a zero byte (RFC 1071)."""
    return (int.from_bytes(data, "big") << (8 * (len(data) & 1))) % 0xFFFF


def _pseudo(packet: bytes | bytearray, ihl: int, length: int) -> int:
    return int.from_bytes(packet[12:20], "big") + packet[9] + length


def complete_checksum(packet: bytes, csum_start: int, csum_offset: int) -> bytes | None:
    """A ``NEEDS_CSUM`` packet with its checksum done: the field holds the pseudo-header sum,
    so the checksum is the complement of the sum from ``csum_start`` to the end.  None when
    the offsets do not fit the packet."""
    at = csum_start + csum_offset
    if at + 2 > len(packet) or csum_start >= len(packet):
        return None
    value = 0xFFFF - (_fold_sum(packet[csum_start:]) or 0xFFFF)
    if value == 0:
        value = 0xFFFF  # RFC 768: UDP sends a computed 0 as all ones (the same sum for TCP)
    return packet[:at] + value.to_bytes(2, "big") + packet[at + 2 :]


def tcp4_checksum_ok(packet: bytes | bytearray, ihl: int) -> bool:
    """Does the TCP checksum of an unfragmented IPv4/TCP packet verify (RFC 793 3.1)?"""
    length = len(packet) - ihl
    return (_fold_sum(packet[ihl:]) + _pseudo(packet, ihl, length)) % 0xFFFF == 0


def set_pseudo_sum(packet: bytearray, ihl: int) -> None:
    """Put the folded pseudo-header sum in the TCP checksum field (what ``NEEDS_CSUM`` wants)."""
    value = _pseudo(packet, ihl, len(packet) - ihl) % 0xFFFF or 0xFFFF
    packet[ihl + 16] = value >> 8
    packet[ihl + 17] = value & 0xFF


def _set_ip_checksum(buf: bytearray, at: int, ihl: int) -> None:
    buf[at + 10] = buf[at + 11] = 0
    value = ipv4_header_checksum(buf[at : at + ihl], ihl)
    buf[at + 10] = value >> 8
    buf[at + 11] = value & 0xFF


def segment_tcp4(
    packet: bytes | bytearray, gso_size: int, prefix: bytes | bytearray = b""
) -> list[bytearray]:
    """Cut IPv4/TCP super-packet ``packet`` into segments of at most ``gso_size`` payload
    bytes, each ``prefix`` (e.g. a VXLAN header and inner Ethernet header) + a whole IPv4/TCP
    packet with complete checksums, as ``tcp_gso_segment`` does.  A packet that needs no
    cutting comes back as one segment, its checksum completed."""
    ihl = (packet[0] & 0x0F) << 2
    thl = (packet[ihl + 12] >> 4) << 2
    hl = ihl + thl
    total = min(len(packet), packet[2] << 8 | packet[3])
    if gso_size <= 0:
        gso_size = max(total - hl, 1)
    o = len(prefix)
    template = bytearray(prefix)
    template += packet[:hl]
    template[o + ihl + 16] = template[o + ihl + 17] = 0
    ident = packet[4] << 8 | packet[5]
    seq = int.from_bytes(packet[ihl + 4 : ihl + 8], "big")
    flags = packet[ihl + 13]
    pseudo_base = int.from_bytes(packet[12:20], "big") + _TCP
    out: list[bytearray] = []
    start = hl
    while True:
        end = min(start + gso_size, total)
        last = end >= total
        seg = template.copy()
        seg += packet[start:end]
        n = end - start + hl
        seg[o + 2] = n >> 8
        seg[o + 3] = n & 0xFF
        seg[o + 4] = ident >> 8
        seg[o + 5] = ident & 0xFF
        seg[o + ihl + 4 : o + ihl + 8] = seq.to_bytes(4, "big")
        seg_flags = flags if last else flags & ~(_FIN | _PSH)
        seg[o + ihl + 13] = seg_flags if not out else seg_flags & ~_CWR
        _set_ip_checksum(seg, o, ihl)
        value = 0xFFFF - ((_fold_sum(seg[o + ihl :]) + pseudo_base + n - ihl) % 0xFFFF or 0xFFFF)
        seg[o + ihl + 16] = value >> 8
        seg[o + ihl + 17] = value & 0xFF
        out.append(seg)
        if last:
            return out
        seq = (seq + end - start) & 0xFFFFFFFF
        ident = (ident + 1) & 0xFFFF
        start = end


class _Run:
    """A GRO run being built: its segments, as they came, and what continues it."""

    __slots__ = ("closed", "gso_size", "hl", "next_id", "next_seq", "segments", "size")

    def __init__(self, packet: bytes, hl: int) -> None:
        self.hl = hl
        payload = len(packet) - hl
        self.gso_size = payload
        self.next_seq = (int.from_bytes(packet[24:28], "big") + payload) & 0xFFFFFFFF
        self.next_id = ((packet[4] << 8 | packet[5]) + 1) & 0xFFFF
        self.segments = [packet]
        self.size = len(packet)
        self.closed = bool(packet[33] & _ENDS_RUN)

    def take(self, packet: bytes) -> bool:
        """Append ``packet`` if it continues this run exactly (``tcp_gro_receive``'s tests;
        the 20-byte IP header is the caller's check)."""
        hl, first = self.hl, self.segments[0]
        payload = len(packet) - hl
        if (
            self.closed
            or payload <= 0
            or payload > self.gso_size
            or self.size + payload > MAX_SUPER_BYTES
            or len(self.segments[-1]) != self.gso_size + hl  # a short segment ended the run
            or int.from_bytes(packet[24:28], "big") != self.next_seq
            # IP IDs count up per segment; with DF set a sender may keep them fixed (RFC 6864)
            or ((packet[4] << 8 | packet[5]) != self.next_id and not packet[6] & 0x40)
            # same TOS/flags/TTL/protocol/addresses, same ports/ack/offset/window/options
            or packet[1] != first[1]
            or packet[6:10] != first[6:10]
            or packet[12:24] != first[12:24]
            or packet[28:33] != first[28:33]
            or packet[34:36] != first[34:36]
            or packet[38:hl] != first[38:hl]
            or (packet[33] | _ENDS_RUN) != (first[33] | _ENDS_RUN)
        ):
            return False
        self.segments.append(packet)
        self.size += payload
        self.next_seq = (self.next_seq + payload) & 0xFFFFFFFF
        self.next_id = (self.next_id + 1) & 0xFFFF
        self.closed = bool(packet[33] & _ENDS_RUN)
        return True

    def packets(self) -> list[tuple[bytes, int]]:
        """The merged packet (checksum field: the pseudo-header sum) and its gso_size when
        every segment's TCP checksum verifies; else the segments as they came, gso_size 0
        (the pod's kernel drops the corrupt one, as it would have without GRO)."""
        segments, hl = self.segments, self.hl
        if len(segments) == 1:
            return [(segments[0], 0)]
        buf = bytearray(segments[0][:hl])
        for segment in segments:
            buf += segment[hl:]
        if not self._verified(buf):
            return [(segment, 0) for segment in segments]
        n = len(buf)
        buf[2] = n >> 8
        buf[3] = n & 0xFF
        buf[33] = segments[-1][33]  # the last segment's FIN/PSH close the super-packet
        _set_ip_checksum(buf, 0, 20)
        set_pseudo_sum(buf, 20)
        return [(bytes(buf), self.gso_size)]

    def _verified(self, merged: bytearray) -> bool:
        """Do all the segments' TCP checksums verify?  Each segment's sum (pseudo-header, TCP
        header, payload) is 0 mod 0xFFFF when it verifies, so their total is too; with even
        ``gso_size`` every payload keeps its word alignment in ``merged``, and the total is
        the headers' sums plus one C-speed sum over the merged payload.  A corrupt segment
        makes the total non-zero exactly when it makes its own sum non-zero; only errors in
        several segments that cancel (odds 1 in 65535, those of a random error passing a
        single checksum) could pass.  Odd ``gso_size``: each segment is checked alone."""
        segments, hl = self.segments, self.hl
        if self.gso_size & 1:
            return all(tcp4_checksum_ok(segment, 20) for segment in segments)
        first = segments[0]
        total = _fold_sum(merged[hl:])
        total += len(segments) * (int.from_bytes(first[12:20], "big") + _TCP)
        for segment in segments:
            total += int.from_bytes(segment[20:hl], "big") + len(segment) - 20
        return total % 0xFFFF == 0


def coalesce(packets: Sequence[bytes]) -> list[tuple[bytes, int]]:
    """GRO over a batch of IPv4 packets in arrival order: (packet, gso_size) for each output,
    gso_size 0 for a packet left as it came (not TCP, not mergeable, alone, or in a run with
    a segment whose checksum fails).

    Packets of one flow keep their order; packets of different flows may be reordered (as
    Linux GRO holds each flow apart).  Only IPv4/TCP without IP options or fragments, with a
    payload and only ACK/PSH/FIN flags, merges."""
    out: list[tuple[bytes, int] | _Run] = []
    open_runs: dict[bytes, _Run] = {}
    for packet in packets:
        n = len(packet)
        if n < 41 or packet[0] != 0x45 or packet[9] != _TCP or packet[6] & 0x3F or packet[7]:
            out.append((packet, 0))
            continue
        hl = 20 + ((packet[32] >> 4) << 2)
        key = packet[12:24]
        run = open_runs.get(key)
        if (packet[2] << 8 | packet[3]) != n or not 40 <= hl < n or packet[33] & _NO_MERGE:
            if run is not None:
                del open_runs[key]  # later segments must not jump ahead of this one
            out.append((packet, 0))
        elif run is None or not run.take(packet):
            run = open_runs[key] = _Run(packet, hl)
            out.append(run)
    merged: list[tuple[bytes, int]] = []
    for item in out:
        if isinstance(item, _Run):
            merged += item.packets()
        else:
            merged.append(item)
    return merged


def cut(buf: bytes | bytearray, headroom: int, gso_size: int) -> list[bytes | bytearray]:
    """What must leave as real frames: ``buf`` (``headroom`` bytes, then an IP packet) as
    segments each behind the same headroom when it is a TCP super-packet of ``gso_size``;
    else ``[buf]`` unchanged (an ICMP answer the router made instead, a short packet)."""
    o = headroom
    if gso_size <= 0 or len(buf) < o + 40 or buf[o + 9] != _TCP or buf[o] >> 4 != 4:
        return [buf]
    ihl = (buf[o] & 0x0F) << 2
    hl = ihl + ((buf[o + ihl + 12] >> 4) << 2)
    if len(buf) - o < hl:
        return [buf]
    segments: list[bytes | bytearray] = []
    segments += segment_tcp4(buf[o:], gso_size, buf[:o])
    return segments
