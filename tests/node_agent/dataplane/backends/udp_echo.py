"""A bounded UDP echo for the interop tests (no such tool is installed in pods or peers).

python3 udp_echo.py serve ADDR PORT SECONDS   echo every datagram back for SECONDS
python3 udp_echo.py ask ADDR PORT COUNT SIZE  send COUNT datagrams of SIZE bytes, one at a
                                              time; exit 0 when at least 90% come back
                                              intact (prints "echoed N/COUNT")
"""

from __future__ import annotations

import socket
import sys
import time


def serve(addr: str, port: int, seconds: float) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, port))
    deadline = time.monotonic() + seconds
    print("serving", flush=True)
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, peer = sock.recvfrom(65535)
        except TimeoutError:
            break
        sock.sendto(data, peer)
    return 0


def ask(addr: str, port: int, count: int, size: int) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(1.0)
    echoed = 0
    for i in range(count):
        payload = (i.to_bytes(4, "big") * (size // 4 + 1))[:size]
        sock.sendto(payload, (addr, port))
        try:
            data = sock.recv(65535)
        except TimeoutError:
            continue
        echoed += data == payload
    print(f"echoed {echoed}/{count}")
    return 0 if echoed * 10 >= count * 9 else 1


if __name__ == "__main__":
    verb, host, port_text, *rest = sys.argv[1:]
    if verb == "serve":
        sys.exit(serve(host, int(port_text), float(rest[0])))
    sys.exit(ask(host, int(port_text), int(rest[0]), int(rest[1])))
