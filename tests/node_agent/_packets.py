"""Packets the capture tests feed: a TCP SYN between two pods, and its VXLAN datagram as the
underlay carries it (outer IPv4/UDP included, as a node capture records it)."""

from __future__ import annotations

from knemu.node_agent.dataplane.capture import raw_ipv4_udp
from knemu.proto import wire

POD_A, POD_B = "10.244.1.5", "10.244.2.7"
NODE_1, NODE_2 = ("192.168.59.11", 4789), ("192.168.59.12", 4789)


def tcp(src: str = POD_A, dst: str = POD_B, sport: int = 40000, dport: int = 80) -> bytes:
    seg = wire.TcpSegment(sport, dport, seq=1, ack=0, flags=wire.TCP_SYN, payload=b"")
    return wire.tcp_packet(src, dst, seg)


def vxlan(inner: bytes, src: tuple[str, int] = NODE_1, dst: tuple[str, int] = NODE_2) -> bytes:
    frame = wire.encode_ethernet(
        wire.EthernetFrame(b"\x02" + bytes(5), b"\x02" + bytes(4) + b"\x01", 0x0800, inner)
    )
    return raw_ipv4_udp(wire.encode_vxlan(1, frame), src, dst, ident=7)
