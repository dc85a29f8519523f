"""SPDY/3.1 frames as pure encode/decode (draft-mbelshe-httpbis-spdy-00 section 2.2, SPDY/3.1
section 2.6), the framing kubectl's port-forward, exec and attach speak (moby/spdystream).

Every frame has an 8-byte header.  A control frame: bit 1, version 3 (15 bits), type (16),
flags (8), length (24).  A data frame: bit 0, stream id (31), flags (8), length (24).  Header
blocks (SYN_STREAM, SYN_REPLY, HEADERS) are ``count, (len, name, len, value)*`` with 32-bit
big-endian lengths, zlib-compressed with the SPDY/3 dictionary; each direction of a connection
keeps one zlib stream for all its blocks (section 2.6.10.1), so the encoder and decoder are
stateful and must see every block in order.

Malformed input raises ``SpdyProtocolError`` naming what was wrong; the session answers it with
GOAWAY and ends the connection.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from knemu.apiserver.streaming.spdy_dictionary import HEADER_DICTIONARY

VERSION = 3
HEADER_BYTES = 8
MAX_FRAME_BYTES = 256 * 1024  # payload accepted (wire: 2**24 - 1); kubectl sends <= 32 KiB
MAX_HEADER_BLOCK_BYTES = 64 * 1024  # after decompression

SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS = 1, 2, 3, 4
PING, GOAWAY, HEADERS, WINDOW_UPDATE = 6, 7, 8, 9
FLAG_FIN, FLAG_UNIDIRECTIONAL = 0x01, 0x02

# RST_STREAM status codes (section 2.4.2) and GOAWAY status codes (section 2.6.6)
PROTOCOL_ERROR, INVALID_STREAM, REFUSED_STREAM, CANCEL = 1, 2, 3, 5
INTERNAL_ERROR, STREAM_IN_USE, STREAM_ALREADY_CLOSED = 6, 8, 9
GOAWAY_OK, GOAWAY_PROTOCOL_ERROR, GOAWAY_INTERNAL_ERROR = 0, 1, 2

_STREAM_ID = 0x7FFFFFFF
Headers = dict[str, str]


class SpdyProtocolError(Exception):
    """The peer sent something that is not SPDY/3.1; the message says what."""


@dataclass(frozen=True)
class DataFrame:
    stream_id: int
    data: bytes
    fin: bool = False


@dataclass(frozen=True)
class SynStream:
    stream_id: int
    headers: Headers
    fin: bool = False
    associated_id: int = 0
    priority: int = 0


@dataclass(frozen=True)
class SynReply:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class HeadersFrame:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True)
class Settings:
    values: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Ping:
    ping_id: int


@dataclass(frozen=True)
class GoAway:
    last_good_stream_id: int
    status: int = GOAWAY_OK


@dataclass(frozen=True)
class WindowUpdate:
    stream_id: int
    delta: int


Frame = (
    DataFrame | SynStream | SynReply | HeadersFrame | RstStream | Settings | Ping | GoAway
    | WindowUpdate
)  # fmt: skip


# ---- header blocks (section 2.6.10) -------------------------------------------------------------


def pack_headers(headers: Headers) -> bytes:
    """The uncompressed block; names lower-cased as SPDY/3 requires."""
    out = [struct.pack(">I", len(headers))]
    for name, value in headers.items():
        raw_name, raw_value = name.lower().encode(), value.encode()
        out += [struct.pack(">I", len(raw_name)), raw_name, struct.pack(">I", len(raw_value))]
        out.append(raw_value)
    return b"".join(out)


def unpack_headers(block: bytes) -> Headers:
    """The name/value pairs of an uncompressed block (several values joined by NUL stay so)."""
    try:
        (count,) = struct.unpack_from(">I", block, 0)
        pos, headers = 4, {}
        for _ in range(count):
            (n,) = struct.unpack_from(">I", block, pos)
            name = block[pos + 4 : pos + 4 + n]
            pos += 4 + n
            (v,) = struct.unpack_from(">I", block, pos)
            value = block[pos + 4 : pos + 4 + v]
            pos += 4 + v
            if len(name) != n or len(value) != v or not name:
                raise SpdyProtocolError("header block: a name or value runs past its end")
            if name != name.lower():
                raise SpdyProtocolError(f"header block: name {name!r} is not lower case")
            headers[name.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    except struct.error:
        raise SpdyProtocolError("header block: truncated") from None
    if pos != len(block):
        raise SpdyProtocolError(f"header block: {len(block) - pos} bytes after the last header")
    return headers


# ---- encoding -----------------------------------------------------------------------------------


def _control(kind: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, kind, flags << 24 | len(payload)) + payload


class FrameEncoder:
    """Frames to bytes; holds the zlib stream of this direction's header blocks."""

    def __init__(self) -> None:
        self._zlib = zlib.compressobj(zdict=HEADER_DICTIONARY)

    def _block(self, headers: Headers) -> bytes:
        return self._zlib.compress(pack_headers(headers)) + self._zlib.flush(zlib.Z_SYNC_FLUSH)

    def encode(self, frame: Frame) -> bytes:
        match frame:
            case DataFrame(stream_id, data, fin):
                head = struct.pack(">II", stream_id & _STREAM_ID, int(fin) << 24 | len(data))
                return head + data
            case SynStream(stream_id, headers, fin, associated_id, priority):
                ids = struct.pack(">IIBB", stream_id, associated_id, (priority & 7) << 5, 0)
                return _control(SYN_STREAM, int(fin), ids + self._block(headers))
            case SynReply(stream_id, headers, fin):
                return _control(
                    SYN_REPLY, int(fin), struct.pack(">I", stream_id) + self._block(headers)
                )
            case HeadersFrame(stream_id, headers, fin):
                return _control(
                    HEADERS, int(fin), struct.pack(">I", stream_id) + self._block(headers)
                )
            case RstStream(stream_id, status):
                return _control(RST_STREAM, 0, struct.pack(">II", stream_id, status))
            case Settings(values):
                entries = b"".join(struct.pack(">II", k & 0xFFFFFF, v) for k, v in values.items())
                return _control(SETTINGS, 0, struct.pack(">I", len(values)) + entries)
            case Ping(ping_id):
                return _control(PING, 0, struct.pack(">I", ping_id))
            case GoAway(last, status):
                return _control(GOAWAY, 0, struct.pack(">II", last, status))
            case WindowUpdate(stream_id, delta):
                return _control(WINDOW_UPDATE, 0, struct.pack(">II", stream_id, delta))
        raise TypeError(f"not a SPDY frame: {frame!r}")


# ---- decoding -----------------------------------------------------------------------------------


class FrameDecoder:
    """Bytes to frames, however the bytes are split; holds the peer's header zlib stream.

    Frames of unknown control types are skipped, as section 2.2.1 asks.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._zlib = zlib.decompressobj(zdict=HEADER_DICTIONARY)

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= HEADER_BYTES:
            first, flags_length = struct.unpack_from(">II", self._buffer, 0)
            flags, length = flags_length >> 24, flags_length & 0xFFFFFF
            if length > MAX_FRAME_BYTES:
                raise SpdyProtocolError(f"a frame of {length} bytes (at most {MAX_FRAME_BYTES})")
            if len(self._buffer) < HEADER_BYTES + length:
                break
            payload = bytes(self._buffer[HEADER_BYTES : HEADER_BYTES + length])
            del self._buffer[: HEADER_BYTES + length]
            if not first & 0x80000000:
                frames.append(DataFrame(first & _STREAM_ID, payload, bool(flags & FLAG_FIN)))
                continue
            version, kind = (first >> 16) & 0x7FFF, first & 0xFFFF
            if version != VERSION:
                raise SpdyProtocolError(f"SPDY version {version}; only 3 (SPDY/3.1) is spoken")
            frame = self._control(kind, flags, payload)
            if frame is not None:
                frames.append(frame)
        return frames

    def _control(self, kind: int, flags: int, payload: bytes) -> Frame | None:
        fin = bool(flags & FLAG_FIN)
        try:
            if kind == SYN_STREAM:
                sid, assoc, prio, _ = struct.unpack_from(">IIBB", payload)
                headers = self._headers(payload[10:])
                return SynStream(sid & _STREAM_ID, headers, fin, assoc & _STREAM_ID, prio >> 5)
            if kind in (SYN_REPLY, HEADERS):
                (sid,) = struct.unpack_from(">I", payload)
                cls = SynReply if kind == SYN_REPLY else HeadersFrame
                return cls(sid & _STREAM_ID, self._headers(payload[4:]), fin)
            if kind == RST_STREAM:
                sid, status = struct.unpack_from(">II", payload)
                return RstStream(sid & _STREAM_ID, status)
            if kind == SETTINGS:
                return Settings(_settings(payload))
            if kind == PING:
                return Ping(struct.unpack_from(">I", payload)[0])
            if kind == GOAWAY:
                last, status = struct.unpack_from(">II", payload)
                return GoAway(last & _STREAM_ID, status)
            if kind == WINDOW_UPDATE:
                sid, delta = struct.unpack_from(">II", payload)
                return WindowUpdate(sid & _STREAM_ID, delta & _STREAM_ID)
        except struct.error:
            raise SpdyProtocolError(
                f"control frame type {kind}: {len(payload)} bytes is too short"
            ) from None
        return None

    def _headers(self, compressed: bytes) -> Headers:
        try:
            block = self._zlib.decompress(compressed, MAX_HEADER_BLOCK_BYTES)
        except zlib.error as exc:
            raise SpdyProtocolError(f"header block does not decompress: {exc}") from None
        if self._zlib.unconsumed_tail:
            raise SpdyProtocolError(f"header block over {MAX_HEADER_BLOCK_BYTES} bytes")
        return unpack_headers(block)


def _settings(payload: bytes) -> dict[int, int]:
    (count,) = struct.unpack_from(">I", payload)
    if len(payload) != 4 + 8 * count:
        raise SpdyProtocolError(f"SETTINGS says {count} entries in {len(payload)} bytes")
    entries = struct.iter_unpack(">II", payload[4:])
    return {flag_id & 0xFFFFFF: value for flag_id, value in entries}
