"""Address conversions and the Internet checksum: RFC 1071 sums, RFC 1624 incremental updates.

Part of ``knemu.proto.wire`` (import it from there).  The router's hot path uses the raw
4-byte address form and the incremental update: a NAT translation precomputes its
``word_delta`` once and applies it per packet with ``checksum_adjust``.
"""

from __future__ import annotations

import struct
import sys

_LITTLE_ENDIAN = sys.byteorder == "little"


# -- addresses ---------------------------------------------------------------------------------


def ip_to_bytes(ip: str) -> bytes:
    """Dotted-quad IPv4 address to 4 bytes; ValueError naming the address if it is not one."""
    parts = ip.split(".")
    try:
        if len(parts) != 4:
            raise ValueError
        out = bytes(int(p) for p in parts)
        if any(not p.isdigit() for p in parts):
            raise ValueError
    except ValueError:
        raise ValueError(f"{ip!r} is not an IPv4 address (expected a.b.c.d)") from None
    return out


def bytes_to_ip(raw: bytes | bytearray | memoryview) -> str:
    return ".".join(str(b) for b in bytes(raw[:4]))


def mac_to_bytes(mac: str) -> bytes:
    """ "02:42:ac:11:00:02" to 6 bytes; ValueError naming the value if it is not a MAC."""
    try:
        out = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    except ValueError:
        out = b""
    if len(out) != 6:
        raise ValueError(f"{mac!r} is not a MAC address (expected six hex pairs like 02:42:..)")
    return out


def bytes_to_mac(raw: bytes | bytearray) -> str:
    return ":".join(f"{b:02x}" for b in bytes(raw[:6]))


# -- checksums (RFC 1071, RFC 1624) -----------------------------------------------------------


def checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The Internet checksum (RFC 1071): one's complement of the one's-complement sum of the
    16-bit words of ``data`` (odd length padded with a zero byte), plus ``initial``."""
    raw = bytes(data)
    if len(raw) % 2:
        raw += b"\x00"
    # RFC 1071 section 2(B): the sum is byte-order independent, so add native-order words
    # and swap the folded result once instead of unpacking big-endian words.
    total: int = sum(memoryview(raw).cast("H"))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    if _LITTLE_ENDIAN:
        total = (total >> 8) | ((total & 0xFF) << 8)
    total += initial
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


_TEN_WORDS = struct.Struct("!10H").unpack_from


def ipv4_header_checksum(packet: bytes | bytearray, ihl: int = 20) -> int:
    """``checksum`` of the IPv4 header at the start of ``packet`` (0 when it is valid).

    The common 20-byte header is summed as ten big-endian words in place, without the copy
    and cast of the general function: this runs for every packet that arrives from a peer.
    """
    if ihl != 20:
        return checksum(packet[:ihl])
    total: int = sum(_TEN_WORDS(packet))
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def pseudo_header_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """Unfolded sum of the IPv4 pseudo-header words (RFC 793 section 3.1, RFC 768)."""
    return (
        (src[0] << 8 | src[1])
        + (src[2] << 8 | src[3])
        + (dst[0] << 8 | dst[1])
        + (dst[2] << 8 | dst[3])
        + proto
        + length
    )


def word_delta(old: bytes, new: bytes) -> int:
    """The RFC 1624 eqn. 3 term ``sum(~m) + sum(m')`` for replacing ``old`` by ``new``
    (equal even lengths).  Precompute it once per translation, apply it per packet with
    ``checksum_adjust``."""
    total = 0
    for i in range(0, len(old), 2):
        total += (~(old[i] << 8 | old[i + 1]) & 0xFFFF) + (new[i] << 8 | new[i + 1])
    return total


def checksum_adjust(hc: int, delta: int) -> int:
    """RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), with ``delta`` from ``word_delta``."""
    total = (~hc & 0xFFFF) + delta
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
