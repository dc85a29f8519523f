"""OffloadTunPort on a real fd (a datagram socketpair stands in for a TUN opened with
IFF_VNET_HDR: one read is one virtio-net header + packet)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from knemu.node_agent.dataplane import offload
from knemu.node_agent.dataplane.offload_port import OffloadTunPort
from knemu.testing import wait_for

from .test_offload import tcp_packet

Got = list[tuple[bytes, int]]


@pytest.fixture
def fake_tun() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


async def test_reads_super_packets_whole_and_completes_partial_checksums(
    fake_tun: tuple[socket.socket, socket.socket],
) -> None:
    a, b = fake_tun
    got: Got = []
    port = OffloadTunPort(a.fileno(), lambda p, gso, now: got.append((p, gso)), name="t")
    big = tcp_packet(bytes(5000), complete=False)
    small = tcp_packet(b"ack", complete=False)
    b.send(offload.tcp4_header(big, 1400) + big)  # TSO: 4 segments of 1400 or less
    b.send(offload.VNET_HEADER.pack(offload.F_NEEDS_CSUM, 0, 0, 0, 20, 16) + small)
    b.send(offload.PLAIN_HEADER + tcp_packet(b"done"))
    b.send(b"short")  # no header: counted, not passed on
    port.start()
    try:
        await wait_for(lambda: len(got) == 3 and port.stats.rx_errors == 1)
        assert got == [(big, 1400), (tcp_packet(b"ack"), 0), (tcp_packet(b"done"), 0)]
        stats = port.stats
        assert (stats.rx_super_packets, stats.rx_segments) == (1, 4)
        assert stats.rx_checksums_completed == 1
    finally:
        port.close()


async def test_write_super_hands_the_pod_one_gso_packet(
    fake_tun: tuple[socket.socket, socket.socket],
) -> None:
    a, b = fake_tun
    port = OffloadTunPort(a.fileno(), lambda p, gso, now: None)
    merged = tcp_packet(bytes(3000))  # as GRO made it; the checksum field gets the pseudo sum
    port.write_super(merged, 1000)
    frame = b.recv(70000)
    parsed = offload.parse_vnet(frame)
    assert parsed is not None
    header, packet = parsed
    assert header == offload.VnetHeader(offload.F_NEEDS_CSUM, offload.GSO_TCPV4, 40, 1000, 20, 16)
    # what the pod's kernel will cut it into is exactly the valid segments
    assert b"".join(bytes(s[40:]) for s in offload.segment_tcp4(packet, 1000)) == bytes(3000)
    assert packet[:36] == merged[:36] and packet[40:] == merged[40:]
    port.write(b"\x45plain")
    assert b.recv(100) == offload.PLAIN_HEADER + b"\x45plain"
    assert (port.stats.tx_super_packets, port.stats.tx_segments, port.stats.tx_packets) == (1, 3, 2)
