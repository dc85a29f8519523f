"""Send UDP datagrams with any IPv4 source address over a raw socket (IP_HDRINCL), from the
namespace the test runs it in: `python3 underlay_send.py SRC DST DPORT HEX [HEX ...]`.

The tests use it as an attacker on a cluster's underlay: frames from an address that is no
node, and frames whose source claims to be a node.  It sends only to the DST it is given (an
address of the test's own cluster, inside namespaces the test made).
"""

from __future__ import annotations

import socket
import sys

from knemu.proto import wire


def main(src: str, dst: str, dport: int, payloads: list[str]) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as sock:
        for payload in payloads:
            sock.sendto(wire.udp_packet(src, dst, 40000, dport, bytes.fromhex(payload)), (dst, 0))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]))
