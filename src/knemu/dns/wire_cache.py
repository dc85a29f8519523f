"""The DNS answer core's wire cache: replies kept as bytes, reused for the same query.

Parsing and rendering through dnspython is most of a query's cost, so replies the
zone logic builds are kept as bytes, keyed by the query itself minus what a reply merely echoes:
the transport, the flags word, the question name lower-cased (DNS names compare ignoring ASCII
case; length octets are <= 63, below "A", so lower-casing cannot touch them), qtype and qclass
as sent, and the OPT record verbatim (payload size, version, DO bit, options).  Only plain
queries are keyed (:func:`cache_key`): QR clear, opcode QUERY, one question whose name has no
compression pointer, no answer or authority records, and either nothing or exactly one OPT
record after the question.  Anything else takes the parsing path.  A hit returns the cached
reply with the query's ID and question bytes copied in: the question sits at offset 12 with the
same length (checked when the entry is stored), and the reply's other names point into it with
dnspython's case-insensitive compression, so the reply is the one the parsing path would build
for this query, byte for byte up to the record order (next paragraph).

Only replies of the zone logic are cached, and only once the view has synced: not forwarded
answers, not header-only FORMERR/NOTIMP replies, not SERVFAIL before the sync.  Truncated
replies are, since the transport and the payload size are in the key.  dnspython shuffles the
records of every RRset it renders (the round robin of CoreDNS's ``loadbalance`` plugin), and a
hit does the same: the entry keeps a multi-record RRset as its records' bodies (type, class,
TTL, rdata) between owner fields that stay in place, and a hit joins them in a fresh random
order.  That is sound for A, AAAA, TXT and SRV, whose rdata holds no compressed name (dnspython
writes SRV targets uncompressed), so no pointer leads into or out of a body; a reply with any
other multi-record RRset is not cached.  The cache is dropped whenever the view's
``generation`` moves (every event and every sync marker), so no answer outlives the view it
came from, and it is an LRU bounded in entries and in bytes, so a flood of distinct names
cannot grow memory.
"""

from __future__ import annotations

import random
import struct
from collections import OrderedDict
from dataclasses import dataclass

import dns.message
import dns.rcode
import dns.rdata
import dns.rdatatype
from dns.rdtypes.IN.SRV import SRV as SrvRdata

HEADER_BYTES = 12  # RFC 1035 4.1.1
CACHE_ENTRIES = 10_000  # most replies kept by the wire cache
CACHE_BYTES = 16 << 20  # most bytes of keys and replies kept (TCP replies reach 64 KiB)
_CACHE_QUERY_BYTES = 512  # longer queries are not keyed (a plain query is far shorter)
_ONE_QUESTION = b"\x00\x01\x00\x00\x00\x00"  # QDCOUNT 1, ANCOUNT 0, NSCOUNT 0
_OPT_HEAD = b"\x00\x00\x29"  # root owner, type OPT
_SRV_HEAD = struct.Struct("!HHH")  # priority, weight, port
_TRANSPORT_TAG = {"udp": b"u", "tcp": b"t"}
# RRsets a hit may shuffle by moving record bodies: no names in the rdata, or uncompressed ones.
_SHUFFLED_TYPES = frozenset(
    (dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.TXT, dns.rdatatype.SRV)
)


# A multi-record RRset in a cached reply: the owner field of its records after the first (one
# compression pointer), and the bodies of all its records in rendered order.
_Shuffled = tuple[bytes, tuple[bytes, ...]]


@dataclass(frozen=True, slots=True)
class Cached:
    """A reply kept by the wire cache, cut around the question it echoes, and its metrics."""

    head: bytes  # reply bytes 2..12: flags and counts (bytes 0..2 are the query's ID)
    tail: bytes | None  # reply bytes after the question, when no RRset is to be shuffled
    pieces: tuple[bytes | _Shuffled, ...]  # else: the same bytes, cut around those RRsets
    rcode: dns.rcode.Rcode
    zone: str
    qtype: str  # type label of the request counter
    response: tuple[str, str, str]  # key of the response counter
    size: int  # bytes held by this entry and its key

    def after_question(self) -> bytes:
        """The reply's bytes after the question, multi-record RRsets freshly shuffled."""
        return self.tail if self.tail is not None else shuffle(self.pieces)


class WireCache:
    """An LRU of :class:`Cached` replies bounded in entries and in bytes, dropped as a whole
    whenever the view's generation moves."""

    def __init__(self, generation: int) -> None:
        self.max_entries = CACHE_ENTRIES
        self.max_bytes = CACHE_BYTES
        self._entries: OrderedDict[bytes, Cached] = OrderedDict()
        self._size = 0
        self._generation = generation

    def get(self, key: bytes, generation: int) -> Cached | None:
        if generation != self._generation:
            self.clear(generation)
            return None
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: bytes, entry: Cached) -> None:
        if entry.size > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._size -= old.size
        self._entries[key] = entry
        self._size += entry.size
        while len(self._entries) > self.max_entries or self._size > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._size -= evicted.size

    def clear(self, generation: int) -> None:
        self._entries.clear()
        self._size = 0
        self._generation = generation

    def statistics(self) -> dict[str, int]:
        return {"entries": len(self._entries), "bytes": self._size}


def cache_key(wire: bytes, proto: str) -> tuple[bytes, int] | None:
    """(cache key, end of the question) of a plain query; None: take the parsing path.

    Reads only the header and walks the question name's labels; the key holds every byte of
    the query but the ID (the counts are implied by the checks), with the name lower-cased.
    """
    tag = _TRANSPORT_TAG.get(proto)
    size = len(wire)
    if tag is None or not HEADER_BYTES < size <= _CACHE_QUERY_BYTES:
        return None
    if wire[2] & 0xF8 or wire[4:10] != _ONE_QUESTION:  # QR or an opcode; not one question
        return None
    pos = HEADER_BYTES
    while True:
        if pos >= size:
            return None
        length = wire[pos]
        if length == 0:
            break
        if length > 63:  # a compression pointer or an obsolete label type
            return None
        pos += length + 1
    name_end = pos + 1
    end = name_end + 4  # qtype, qclass
    additional = wire[10:12]
    if additional == b"\x00\x00":
        if end != size:
            return None
    elif additional != b"\x00\x01" or wire[end : end + 3] != _OPT_HEAD or size < end + 11:
        return None
    elif int.from_bytes(wire[end + 9 : end + 11], "big") != size - end - 11:
        return None  # the OPT record's data must end the message
    return tag + wire[2:4] + wire[HEADER_BYTES:name_end].lower() + wire[name_end:], end


def cut(
    wire: bytes, end: int, response: dns.message.Message
) -> tuple[bytes | _Shuffled, ...] | None:
    """The reply after the question as fixed bytes and RRsets to shuffle on each hit; None if
    the reply cannot be cached (an RRset whose records a hit could not reorder).

    Walks the records as dnspython rendered them: each section's RRsets in order, as many as
    the header counts (a truncated reply holds a prefix of them); the rest is fixed bytes.
    """
    counts = (wire[6:8], wire[8:10], wire[10:12])
    sections = (response.answer, response.authority, response.additional)
    pieces: list[bytes | _Shuffled] = []
    pos = start = end
    try:
        for count_bytes, rrsets in zip(counts, sections, strict=True):
            left = int.from_bytes(count_bytes, "big")
            for rrset in rrsets:
                n = len(rrset)
                if n == 0:
                    return None  # rendered as one empty record: not something we build
                if n > left:
                    break  # truncated here: nothing after it went out
                left -= n
                if n == 1:
                    pos = skip_record(wire, pos)
                    continue
                if rrset.rdtype not in _SHUFFLED_TYPES:
                    return None
                pos = skip_name(wire, pos)  # the first owner stays with the fixed bytes
                pieces.append(wire[start:pos])
                bodies: list[bytes] = []
                owner = b""
                for i in range(n):
                    if i:
                        after = skip_name(wire, pos)
                        if i == 1:
                            owner = wire[pos:after]
                        if wire[pos:after] != owner or after - pos != 2:
                            return None  # not one pointer to the first owner: leave it be
                        pos = after
                    body_end = pos + 10 + int.from_bytes(wire[pos + 8 : pos + 10], "big")
                    bodies.append(wire[pos:body_end])
                    pos = body_end
                # Kept in the RRset's own order, which dnspython shuffles when it renders.
                by_rdata = {body[10:]: body for body in bodies}
                ordered = tuple(by_rdata.get(rdata_wire(rd), b"") for rd in rrset)
                if len(by_rdata) != n or b"" in ordered:
                    return None
                pieces.append((owner, ordered))
                start = pos
    except IndexError:
        return None
    if pos > len(wire):
        return None
    pieces.append(wire[start:])
    return tuple(pieces)


def rdata_wire(rd: dns.rdata.Rdata) -> bytes:
    """The rdata as rendered uncompressed; SRV by hand, as dnspython's renderer is slow."""
    if isinstance(rd, SrvRdata) and rd.target.is_absolute():
        target = b"".join(bytes((len(label),)) + label for label in rd.target.labels)
        return _SRV_HEAD.pack(rd.priority, rd.weight, rd.port) + target
    return rd.to_wire() or b""  # (bytes: no file given)


def skip_name(wire: bytes, pos: int) -> int:
    while True:
        length = wire[pos]
        if length == 0:
            return pos + 1
        if length >= 0xC0:
            return pos + 2
        pos += length + 1


def skip_record(wire: bytes, pos: int) -> int:
    pos = skip_name(wire, pos)
    return pos + 10 + int.from_bytes(wire[pos + 8 : pos + 10], "big")


def shuffle(pieces: tuple[bytes | _Shuffled, ...]) -> bytes:
    """A cached reply's bytes after the question, each multi-record RRset in a new order (as
    dnspython's ``random.shuffle`` orders them when it renders)."""
    out: list[bytes] = []
    for piece in pieces:
        if isinstance(piece, bytes):
            out.append(piece)
        else:
            owner, bodies = piece
            order = list(bodies)
            random.shuffle(order)
            out.append(owner.join(order))
    return b"".join(out)
