"""Packet captures, sans-I/O: packets and timestamps in, pcap or pcapng bytes out.

Theory of operation.  The adapters (``knemu.node_agent.dataplane.adapters``) carry a ``tap`` that is
``None`` while nobody captures, so an idle tap costs one attribute test per wakeup or write.
A running ``knemu capture`` sets the tap to a function that hands each packet to a
``CaptureSession``: the session filters it, encodes one record at once (the packet may live
in a buffer the router reuses) and queues the bytes.  The queue is bounded in bytes: when
the reader (an HTTP response draining ``take()``) is slower than the traffic, further
packets are dropped and counted, never waited for, so a capture can never stall forwarding;
while the queue is full a packet costs a length test (it is counted as dropped before the
filter looks at it, unlike a kernel capture, because filtering costs more than dropping).
The session ends itself after ``count`` packets; the adapter ends it after a duration.

File formats:

* pcap, draft-ietf-opsawg-pcap section 4 (file header) and 5 (packet record), microsecond
  timestamps, little-endian (magic 0xA1B2C3D4 written in host order as libpcap does).
* pcapng, draft-ietf-opsawg-pcapng: a Section Header Block, one Interface Description Block,
  an Enhanced Packet Block per packet with ``epb_flags`` carrying the direction (inbound or
  outbound, section 4.3.1), and at the end an Interface Statistics Block whose ``isb_ifdrop``
  holds the packets the session dropped (section 4.6).

Link type ``LINKTYPE_RAW`` (101, https://www.tcpdump.org/linktypes.html): each record is an
IPv4 packet.  A pod's eth0 is a TUN device, so its packets are IP already; the node's underlay
socket sees UDP payloads, so ``raw_ipv4_udp`` rebuilds the outer IPv4 and UDP headers around
each VXLAN datagram, as they were on the wire (RFC 7348 section 5: UDP checksum zero), and
Wireshark decodes UDP port 4789 as VXLAN.  With the ipip backend the underlay is a raw
socket: it reads whole IPv4 packets, and ``raw_ipv4`` adds the outer header (protocol 4) the
kernel puts on what it sends.

The filter language is a small subset of pcap-filter(7): primitives ``tcp``, ``udp``,
``icmp``, ``host A``, ``src A``, ``dst A``, ``port N``, ``vxlan``, each optionally preceded by
``not``, joined by ``and``.  On a node's underlay a primitive matches if the outer or the
encapsulated inner packet matches, so ``host 10.244.2.5`` keeps the tunnel traffic of one pod.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from knemu.errors import LocalError
from knemu.proto import wire

LINKTYPE_RAW = 101
DEFAULT_SNAPLEN = 65535
DEFAULT_BUFFER_BYTES = 4 << 20
VXLAN_PORT = 4789
FORMATS = ("pcap", "pcapng")

PCAP_MAGIC = 0xA1B2C3D4
SHB, IDB, EPB, ISB = 0x0A0D0D0A, 0x00000001, 0x00000006, 0x00000005
BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPT_END, OPT_COMMENT = 0, 1
IF_NAME = 2
EPB_FLAGS = 2
ISB_IFDROP = 5
INBOUND, OUTBOUND = 1, 2  # epb_flags bits 0-1

IPPROTO = {"icmp": 1, "tcp": 6, "udp": 17}


class CaptureError(LocalError):
    """A capture request that cannot be served as asked (bad filter, format, limits)."""


# -- file formats ----------------------------------------------------------------------------


def pcap_header(snaplen: int = DEFAULT_SNAPLEN, linktype: int = LINKTYPE_RAW) -> bytes:
    """The 24-byte pcap file header (version 2.4, microsecond timestamps)."""
    return struct.pack("<IHHiIII", PCAP_MAGIC, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(ts: float, packet: bytes | bytearray, snaplen: int = DEFAULT_SNAPLEN) -> bytes:
    sec, usec = _split_us(ts)
    data = bytes(packet[:snaplen])
    return struct.pack("<IIII", sec, usec, len(data), len(packet)) + data


def _split_us(ts: float) -> tuple[int, int]:
    us = max(0, round(ts * 1_000_000))
    return us // 1_000_000, us % 1_000_000


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad4(value)


def _block(kind: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", kind, length) + body + struct.pack("<I", length)


def pcapng_header(
    interface: str, snaplen: int = DEFAULT_SNAPLEN, linktype: int = LINKTYPE_RAW
) -> bytes:
    """Section Header Block (section length unknown: -1) and one Interface Description Block."""
    shb = struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1)
    shb += _option(OPT_COMMENT, b"knemu capture") + _option(OPT_END, b"")
    idb = struct.pack("<HHI", linktype, 0, snaplen)
    idb += _option(IF_NAME, interface.encode()[:255]) + _option(OPT_END, b"")
    return _block(SHB, shb) + _block(IDB, idb)


def pcapng_packet(
    ts: float,
    packet: bytes | bytearray,
    outbound: bool | None = None,
    snaplen: int = DEFAULT_SNAPLEN,
) -> bytes:
    """Enhanced Packet Block on interface 0; timestamps in microseconds (if_tsresol default)."""
    us = max(0, round(ts * 1_000_000))
    data = bytes(packet[:snaplen])
    body = struct.pack("<IIIII", 0, us >> 32, us & 0xFFFFFFFF, len(data), len(packet))
    body += _pad4(data)
    if outbound is not None:
        flags = OUTBOUND if outbound else INBOUND
        body += _option(EPB_FLAGS, struct.pack("<I", flags)) + _option(OPT_END, b"")
    return _block(EPB, body)


def pcapng_statistics(ts: float, dropped: int) -> bytes:
    """Interface Statistics Block for interface 0 with isb_ifdrop."""
    us = max(0, round(ts * 1_000_000))
    body = struct.pack("<III", 0, us >> 32, us & 0xFFFFFFFF)
    body += _option(ISB_IFDROP, struct.pack("<Q", dropped)) + _option(OPT_END, b"")
    return _block(ISB, body)


# -- outer headers ---------------------------------------------------------------------------


def raw_ipv4_udp(
    payload: bytes | bytearray,
    src: tuple[str, int],
    dst: tuple[str, int],
    ident: int = 0,
) -> bytes:
    """An IPv4 + UDP packet around ``payload`` (RFC 791, RFC 768); the UDP checksum is zero,
    as RFC 7348 section 5 says VXLAN senders should send it; DF set and TTL 64, as Linux's
    vxlan device sends.  The addresses' share of the header checksum is cached per pair."""
    base = _pair_sums.get((src[0], dst[0]))
    if base is None:
        if len(_pair_sums) > 4096:
            _pair_sums.clear()
        addrs = ipaddress.IPv4Address(src[0]).packed + ipaddress.IPv4Address(dst[0]).packed
        fixed = struct.pack("!HHBB", 0x4500, 0x4000, 64, 17)
        base = _pair_sums[(src[0], dst[0])] = (sum(struct.unpack("!7H", addrs + fixed)), addrs)
    udp_len = 8 + len(payload)
    ident &= 0xFFFF
    total = base[0] + udp_len + 20 + ident
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    header = struct.pack("!BBHHHBBH", 0x45, 0, udp_len + 20, ident, 0x4000, 64, 17, ~total & 0xFFFF)
    return header + base[1] + struct.pack("!HHHH", src[1], dst[1], udp_len, 0) + payload


_pair_sums: dict[tuple[str, str], tuple[int, bytes]] = {}


def raw_ipv4(
    payload: bytes | bytearray, src: str, dst: str, protocol: int, ident: int = 0
) -> bytes:
    """An IPv4 header (RFC 791; DF set, TTL 64) around ``payload`` for ``protocol``: what the
    kernel puts on a raw socket's sends, e.g. IP-in-IP (RFC 2003, protocol 4)."""
    return wire.encode_ipv4(
        wire.IPv4Packet(src, dst, protocol, bytes(payload), ident=ident & 0xFFFF)
    )


# -- the filter ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fields:
    proto: int
    src: bytes
    dst: bytes
    sport: int
    dport: int


def _fields(packet: bytes | bytearray, offset: int = 0) -> _Fields | None:
    """Protocol, addresses and ports of the IPv4 packet at ``offset``; None if not IPv4."""
    if len(packet) < offset + 20 or packet[offset] >> 4 != 4:
        return None
    ihl = (packet[offset] & 0x0F) * 4
    proto = packet[offset + 9]
    src, dst = bytes(packet[offset + 12 : offset + 16]), bytes(packet[offset + 16 : offset + 20])
    sport = dport = 0
    l4 = offset + ihl
    if proto in (6, 17) and len(packet) >= l4 + 4:
        sport, dport = struct.unpack_from("!HH", packet, l4)
    return _Fields(proto, src, dst, sport, dport)


def _inner(packet: bytes | bytearray, outer: _Fields) -> _Fields | None:
    """The IPv4 packet inside a VXLAN datagram: IP, UDP (8), VXLAN (8), Ethernet (14)."""
    if outer.proto != 17 or VXLAN_PORT not in (outer.sport, outer.dport):
        return None
    ihl = (packet[0] & 0x0F) * 4
    eth = ihl + 16
    if len(packet) < eth + 14 or packet[eth + 12 : eth + 14] != b"\x08\x00":
        return None
    return _fields(packet, eth + 14)


Predicate = Callable[[_Fields], bool]


def _primitive(words: list[str], i: int, text: str) -> tuple[Predicate, int]:
    word = words[i]
    if word in IPPROTO:
        proto = IPPROTO[word]
        return (lambda f: f.proto == proto), i + 1
    if word == "vxlan":
        return (lambda f: f.proto == 17 and VXLAN_PORT in (f.sport, f.dport)), i + 1
    if word not in ("host", "src", "dst", "port"):
        raise CaptureError(f"filter {text!r}: unknown word {word!r}; use tcp, udp, icmp, "
                           "vxlan, host A, src A, dst A, port N, not, and")  # fmt: skip
    if i + 1 >= len(words):
        raise CaptureError(f"filter {text!r}: {word!r} needs a value")
    value = words[i + 1]
    if word == "port":
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise CaptureError(f"filter {text!r}: port {value!r} is not a port number (1-65535)")
        port = int(value)
        return (lambda f: port in (f.sport, f.dport)), i + 2
    if value == "host" and i + 2 < len(words):  # "src host A", as pcap-filter spells it
        i, value = i + 1, words[i + 2]
    try:
        addr = ipaddress.IPv4Address(value).packed
    except ValueError:
        raise CaptureError(f"filter {text!r}: {value!r} is not an IPv4 address") from None
    if word == "src":
        return (lambda f: f.src == addr), i + 2
    if word == "dst":
        return (lambda f: f.dst == addr), i + 2
    return (lambda f: addr in (f.src, f.dst)), i + 2


def parse_filter(text: str) -> Callable[[bytes | bytearray], bool] | None:
    """A predicate over IPv4 packets for ``text``, or None for an empty filter (everything).

    Raises CaptureError naming the bad word."""
    words = text.replace("&&", " and ").replace("!", " not ").split()
    if not words:
        return None
    terms: list[tuple[bool, Predicate]] = []
    i = 0
    while i < len(words):
        negate = False
        while i < len(words) and words[i] == "not":
            negate, i = not negate, i + 1
        if i >= len(words):
            raise CaptureError(f"filter {text!r}: 'not' needs something to negate")
        pred, i = _primitive(words, i, text)
        terms.append((negate, pred))
        if i < len(words):
            if words[i] != "and":
                raise CaptureError(f"filter {text!r}: expected 'and' before {words[i]!r} "
                                   "(only 'and' and 'not' combine primitives)")  # fmt: skip
            i += 1
            if i >= len(words):
                raise CaptureError(f"filter {text!r}: 'and' needs a second primitive")

    def matches(packet: bytes | bytearray) -> bool:
        outer = _fields(packet)
        if outer is None:
            return False
        inner = _inner(packet, outer)
        for negate, pred in terms:
            hit = pred(outer) or (inner is not None and pred(inner))
            if hit == negate:
                return False
        return True

    return matches


# -- a capture -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaptureStatistics:
    captured: int  # records queued for the reader
    dropped: int  # matched but the reader was too slow (queue full)
    filtered: int  # did not match the filter


class CaptureSession:
    """One running capture: ``offer`` from the tap, ``take`` from the reader.

    ``wall_offset`` turns the adapters' loop clock into seconds since the epoch; ``on_data``
    is called when the queue goes from empty to non-empty (the reader's wake-up).
    """

    def __init__(
        self,
        fmt: str = "pcap",
        *,
        interface: str = "knemu",
        packet_filter: str = "",
        count: int | None = None,
        snaplen: int = DEFAULT_SNAPLEN,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        wall_offset: float = 0.0,
        on_data: Callable[[], None] | None = None,
    ) -> None:
        if fmt not in FORMATS:
            raise CaptureError(f"capture format {fmt!r}: use pcap or pcapng")
        if count is not None and count < 1:
            raise CaptureError(f"capture count {count}: must be at least 1")
        if not 64 <= snaplen <= DEFAULT_SNAPLEN:
            raise CaptureError(f"capture snaplen {snaplen}: must be 64-{DEFAULT_SNAPLEN}")
        self.fmt = fmt
        self.count = count
        self.snaplen = snaplen
        self._match = parse_filter(packet_filter)
        self._limit = buffer_bytes
        self._offset = wall_offset
        self._on_data = on_data
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._captured = self._dropped = self._filtered = 0
        self._header = pcap_header(snaplen) if fmt == "pcap" else pcapng_header(interface, snaplen)

    @property
    def done(self) -> bool:
        """True once ``count`` packets are captured; later offers are ignored."""
        return self.count is not None and self._captured >= self.count

    def header(self) -> bytes:
        return self._header

    def offer(self, packet: bytes | bytearray, now: float, outbound: bool | None = None) -> None:
        """One packet seen by the tap at loop time ``now``; never blocks, never raises."""
        if self.done:
            return
        size = min(len(packet), self.snaplen) + 40
        if self._queued_bytes + size > self._limit:
            self._dropped += 1  # counted before filtering: a full queue must cost least
            return
        if self._match is not None and not self._match(packet):
            self._filtered += 1
            return
        ts = now + self._offset
        if self.fmt == "pcap":
            record = pcap_record(ts, packet, self.snaplen)
        else:
            record = pcapng_packet(ts, packet, outbound, self.snaplen)
        wake = not self._queue
        self._queue.append(record)
        self._queued_bytes += len(record)
        self._captured += 1
        if wake and self._on_data is not None:
            self._on_data()

    def room_for(self, size: int) -> bool:
        """Whether a packet of ``size`` bytes would be queued now (filter aside): a tap that
        must build the packet first (the underlay's outer headers) skips that when not, and
        calls ``count_drop`` instead."""
        return not self.done and self._queued_bytes + min(size, self.snaplen) + 40 <= self._limit

    def count_drop(self) -> None:
        if not self.done:
            self._dropped += 1

    def take(self) -> bytes:
        """Every queued record, oldest first; the queue is empty afterwards."""
        data = b"".join(self._queue)
        self._queue.clear()
        self._queued_bytes = 0
        return data

    def trailer(self, now: float) -> bytes:
        """What ends the file: pcapng's statistics block with the drop count; nothing in pcap."""
        return pcapng_statistics(now + self._offset, self._dropped) if self.fmt == "pcapng" else b""

    def statistics(self) -> CaptureStatistics:
        return CaptureStatistics(self._captured, self._dropped, self._filtered)


# -- reading captures back (the CLI's summary, tests) -----------------------------------------


@dataclass
class CaptureSummary:
    fmt: str = ""
    packets: int = 0
    dropped: int | None = None  # pcapng isb_ifdrop, when the writer sent one


class CaptureReader:
    """Incremental reader of a pcap or pcapng stream written by ``CaptureSession``: ``feed``
    bytes as they arrive; ``packets`` holds (timestamp, data, outbound) for each record."""

    def __init__(self, keep_packets: bool = True) -> None:
        self.summary = CaptureSummary()
        self.packets: list[tuple[float, bytes, bool | None]] = []
        self._keep = keep_packets
        self._buf = bytearray()
        self._started = False

    def feed(self, data: bytes) -> None:
        self._buf += data
        if not self._started:
            if len(self._buf) < 24:
                return
            self._start()
        while self._next():
            pass

    def _start(self) -> None:
        (magic,) = struct.unpack_from("<I", self._buf)
        if magic == PCAP_MAGIC:
            self.summary.fmt = "pcap"
            del self._buf[:24]
        elif magic == SHB:
            self.summary.fmt = "pcapng"
        else:
            raise CaptureError(f"not a pcap or pcapng stream (magic {magic:#010x})")
        self._started = True

    def _next(self) -> bool:
        buf = self._buf
        if self.summary.fmt == "pcap":
            if len(buf) < 16:
                return False
            sec, usec, incl, _orig = struct.unpack_from("<IIII", buf)
            if len(buf) < 16 + incl:
                return False
            self._record(sec + usec / 1e6, bytes(buf[16 : 16 + incl]), None)
            del buf[: 16 + incl]
            return True
        if len(buf) < 8:
            return False
        kind, length = struct.unpack_from("<II", buf)
        if length < 12 or length % 4:
            raise CaptureError(f"pcapng block of bad length {length}")
        if len(buf) < length:
            return False
        self._block(kind, bytes(buf[8 : length - 4]))
        del buf[:length]
        return True

    def _block(self, kind: int, body: bytes) -> None:
        if kind == EPB:
            _iface, hi, lo, incl, _orig = struct.unpack_from("<IIIII", body)
            data = body[20 : 20 + incl]
            outbound = None
            for code, value in _options(body[20 + incl + (-incl % 4) :]):
                if code == EPB_FLAGS:
                    outbound = (struct.unpack("<I", value)[0] & 3) == OUTBOUND
            self._record(((hi << 32) | lo) / 1e6, data, outbound)
        elif kind == ISB:
            for code, value in _options(body[12:]):
                if code == ISB_IFDROP:
                    self.summary.dropped = struct.unpack("<Q", value)[0]

    def _record(self, ts: float, data: bytes, outbound: bool | None) -> None:
        self.summary.packets += 1
        if self._keep:
            self.packets.append((ts, data, outbound))


def _options(data: bytes) -> list[tuple[int, bytes]]:
    out, i = [], 0
    while i + 4 <= len(data):
        code, length = struct.unpack_from("<HH", data, i)
        if code == OPT_END:
            break
        out.append((code, data[i + 4 : i + 4 + length]))
        i += 4 + length + (-length % 4)
    return out


def describe_packet(packet: bytes) -> str:
    """One line for a captured IPv4 packet, as tcpdump prints it briefly; VXLAN datagrams
    show the outer header, the VNI and the inner packet."""
    outer = _fields(packet)
    if outer is None:
        return f"non-IPv4 packet, {len(packet)} bytes"
    line = _tuple_text(outer) + f", length {len(packet)}"
    inner = _inner(packet, outer)
    if inner is not None:
        ihl = (packet[0] & 0x0F) * 4
        vni = int.from_bytes(packet[ihl + 12 : ihl + 15], "big")
        line += f": VXLAN vni {vni}: {_tuple_text(inner)}"
    return line


def _tuple_text(f: _Fields) -> str:
    names = {v: k.upper() for k, v in IPPROTO.items()}
    src, dst = ipaddress.IPv4Address(f.src), ipaddress.IPv4Address(f.dst)
    if f.proto in (6, 17):
        return f"{names[f.proto]} {src}:{f.sport} > {dst}:{f.dport}"
    return f"{names.get(f.proto, f'proto {f.proto}')} {src} > {dst}"
