"""TunPort and UnderlayEndpoint on real fds (a datagram socketpair stands in for a TUN fd:
one read is one packet, like /dev/net/tun with IFF_NO_PI)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator, Sequence

import pytest

from knemu.node_agent.dataplane.adapters import RECEIVE, SEND, TunPort, UnderlayEndpoint
from knemu.node_agent.dataplane.faults import Impairments
from knemu.testing import wait_for


@pytest.fixture
def fake_tun() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


async def test_tun_port_reads_every_packet_in_batches(
    fake_tun: tuple[socket.socket, socket.socket],
) -> None:
    a, b = fake_tun
    got: list[tuple[bytes, float]] = []
    for i in range(100):
        b.send(bytes([i]) * 20)
    port = TunPort(a.fileno(), lambda p, now: got.append((p, now)), name="t", batch=16)
    port.start()
    try:
        await wait_for(lambda: len(got) == 100)
        assert [p for p, _ in got] == [bytes([i]) * 20 for i in range(100)]
        assert port.stats.rx_packets == 100 and port.stats.rx_bytes == 2000
        # 100 packets, at most 16 per wakeup: at least 7 wakeups, all packets of one wakeup
        # share one timestamp.
        assert port.stats.wakeups >= 7
        assert len({now for _, now in got}) <= port.stats.wakeups
    finally:
        port.close()


async def test_tun_port_write_and_close(fake_tun: tuple[socket.socket, socket.socket]) -> None:
    a, b = fake_tun
    got: list[bytes] = []
    port = TunPort(a.fileno(), lambda p, now: got.append(p))
    port.start()
    port.write(b"\x45" + b"x" * 40)
    assert b.recv(100) == b"\x45" + b"x" * 40
    assert port.stats.tx_packets == 1
    port.close()
    b.send(b"after close")
    await asyncio.sleep(0)  # let the loop run once: nothing is read any more
    assert got == []
    assert a.recv(100) == b"after close"


async def test_tun_port_counts_drops_when_peer_is_gone(
    fake_tun: tuple[socket.socket, socket.socket],
) -> None:
    a, b = fake_tun
    port = TunPort(a.fileno(), lambda p, now: None)
    b.close()
    port.write(b"lost")
    assert port.stats.tx_dropped == 1 and port.stats.tx_packets == 0


class ScriptedFaults:
    """An Impairment: per direction, the delays of the copies to deliver for every datagram."""

    def __init__(self, egress: Sequence[float], ingress: Sequence[float]) -> None:
        self.plan = {SEND: tuple(egress), RECEIVE: tuple(ingress)}
        self.calls: list[tuple[str, str]] = []

    def __bool__(self) -> bool:
        return True

    def apply(
        self, datagram: bytes, peer: str, direction: str, now: float
    ) -> list[tuple[float, bytes]]:
        self.calls.append((direction, peer))
        return [(now + d, datagram) for d in self.plan[direction]]


async def _pair(
    faults_a: ScriptedFaults | None,
) -> tuple[UnderlayEndpoint, UnderlayEndpoint, list[tuple[bytes, float]]]:
    got: list[tuple[bytes, float]] = []
    a = UnderlayEndpoint(lambda d, src, now: None, faults_a, peer_of=lambda ip: f"node@{ip}")
    b = UnderlayEndpoint(lambda d, src, now: got.append((d, now)))
    await a.open(("127.0.0.1", 0))
    await b.open(("127.0.0.1", 0))
    return a, b, got


async def test_underlay_passes_datagrams_without_faults() -> None:
    a, b, got = await _pair(None)
    try:
        a.send(b"vxlan", b.address)
        await wait_for(lambda: len(got) == 1)
        assert got[0][0] == b"vxlan"
        assert a.stats.tx_packets == 1 and b.stats.rx_packets == 1
    finally:
        a.close()
        b.close()


async def test_underlay_egress_drop_duplicate_and_delay() -> None:
    faults = ScriptedFaults(egress=(), ingress=(0.0,))
    a, b, got = await _pair(faults)
    loop = asyncio.get_running_loop()
    try:
        a.send(b"dropped", b.address)
        assert faults.calls == [(SEND, "node@127.0.0.1")]
        faults.plan[SEND] = (0.0, 0.0)
        a.send(b"twice", b.address)
        await wait_for(lambda: len(got) == 2)
        assert [d for d, _ in got] == [b"twice", b"twice"]
        faults.plan[SEND] = (0.2,)
        sent_at = loop.time()
        a.send(b"late", b.address)
        await wait_for(lambda: len(got) == 3)
        assert got[2][0] == b"late" and got[2][1] - sent_at >= 0.19
    finally:
        a.close()
        b.close()


async def test_underlay_ingress_faults_apply_before_the_router() -> None:
    got: list[bytes] = []
    faults = ScriptedFaults(egress=(0.0,), ingress=())
    receiver = UnderlayEndpoint(lambda d, src, now: got.append(d), faults)
    sender = UnderlayEndpoint(lambda d, src, now: None)
    await receiver.open(("127.0.0.1", 0))
    await sender.open(("127.0.0.1", 0))
    try:
        sender.send(b"first", receiver.address)
        await wait_for(lambda: receiver.stats.rx_packets == 1)
        assert got == [] and faults.calls == [(RECEIVE, "127.0.0.1")]
        faults.plan[RECEIVE] = (0.0,)
        sender.send(b"second", receiver.address)
        await wait_for(lambda: got == [b"second"])
    finally:
        receiver.close()
        sender.close()


async def test_underlay_with_real_impairments_partition_then_heal() -> None:
    faults = Impairments(seed=1)
    got: list[bytes] = []
    a = UnderlayEndpoint(lambda d, src, now: None, faults, peer_of=lambda ip: "node-2")
    b = UnderlayEndpoint(lambda d, src, now: got.append(d))
    await a.open(("127.0.0.1", 0))
    await b.open(("127.0.0.1", 0))
    try:
        faults.add({"peer": "node-2", "partition": True})
        a.send(b"cut", b.address)
        faults.add({"peer": "node-3", "partition": True})
        assert faults.clear("node-2") == 1
        a.send(b"healed", b.address)
        await wait_for(lambda: got == [b"healed"])
        assert faults.statistics()["dropped"] == 1
    finally:
        a.close()
        b.close()


async def test_underlay_close_cancels_delayed_copies() -> None:
    faults = ScriptedFaults(egress=(30.0,), ingress=(0.0,))
    a, b, got = await _pair(faults)
    a.send(b"never", b.address)
    assert len(a._timers) == 1
    a.close()
    assert not a._timers
    b.close()
    assert got == [] and a.stats.tx_packets == 0


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="raw sockets need root")
async def test_underlay_sends_from_the_port_chosen_per_datagram_and_sets_df() -> None:
    """RFC 7348's per-flow source port through the raw sender, on loopback; the socket filter
    keeps the raw socket from queueing the UDP it would otherwise see."""
    got: list[tuple[bytes, tuple[str, int]]] = []
    a = UnderlayEndpoint(lambda d, src, now: None)
    b = UnderlayEndpoint(lambda d, src, now: got.append((d, src)))
    await a.open(("127.0.0.1", 0))
    await b.open(("127.0.0.1", 0))
    try:
        a.send_from_ports(lambda d: 50000 + d[0])
        a.set_dont_fragment(False)
        for i in range(3):
            a.send(bytes([i]) * 40, b.address)
        await wait_for(lambda: len(got) == 3)
        assert got == [(bytes([i]) * 40, ("127.0.0.1", 50000 + i)) for i in range(3)]
        assert a.stats.tx_packets == 3
        assert a._raw_udp is not None
        assert a._raw_udp.getsockopt(socket.IPPROTO_IP, 10) == 0  # IP_PMTUDISC_DONT: DF clear
        a.set_dont_fragment(True)
        assert a._raw_udp.getsockopt(socket.IPPROTO_IP, 10) == 3  # PROBE: DF set
        with pytest.raises(BlockingIOError):
            a._raw_udp.recv(65535)  # nothing queued despite three UDP datagrams seen
    finally:
        a.close()
        b.close()
