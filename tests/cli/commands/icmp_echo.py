"""One ICMP echo (RFC 792) over a raw socket: `python3 icmp_echo.py DST`; exit 0 on a reply.

Used inside pods by the integration tests, since no ping binary is installed here.  Without
CAP_NET_RAW (a pod's containers run unprivileged) it uses an ICMP datagram socket ("ping
socket", allowed by the pod's net.ipv4.ping_group_range): the kernel then picks the
identifier and hands back the ICMP message without its IP header.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def main(dst: str) -> int:
    ident = os.getpid() & 0xFFFF
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        raw = True
    except PermissionError:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
        # The TTL as ancillary data (IP_RECVTTL is 12 on Linux; Python 3.11 lacks the name).
        sock.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_RECVTTL", 12), 1)
        raw = False
    sock.settimeout(3)
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"knemu-ping"
    packet = header[:2] + struct.pack("!H", checksum(header)) + header[4:]
    start = time.monotonic()
    sock.sendto(packet, (dst, 0))
    deadline = start + 3
    while time.monotonic() < deadline:
        try:
            data, ancillary, _, addr = sock.recvmsg(2048, socket.CMSG_SPACE(4))
        except TimeoutError:
            break
        ihl = (data[0] & 0x0F) * 4 if raw else 0
        kind, _, _, got_id, _ = struct.unpack("!BBHHH", data[ihl : ihl + 8])
        if kind == 0 and (got_id == ident or not raw) and addr[0] == dst:
            ms = (time.monotonic() - start) * 1000
            ttl = data[8] if raw else _ttl(ancillary)
            print(f"reply from {dst} ttl={ttl} time={ms:.1f}ms")
            return 0
    print(f"no reply from {dst}")
    return 1


def _ttl(ancillary: list[tuple[int, int, bytes]]) -> int:
    for level, kind, value in ancillary:
        if level == socket.IPPROTO_IP and kind == socket.IP_TTL:
            return int.from_bytes(value[:4], sys.byteorder)
    return -1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
