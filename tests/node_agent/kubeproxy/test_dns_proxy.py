"""The node-local DNS forwarder: ID rewriting core and real UDP/TCP relaying on loopback."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import cast

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest
from hypothesis import given, strategies as st

from knemu.node_agent.kubeproxy.dns_proxy import DnsForwarder, QueryRelay, servfail
from knemu.testing import wait_for


def query(qid: int, name: str = "web.default.svc.cluster.local.") -> bytes:
    msg = dns.message.make_query(name, "A")
    msg.id = qid
    return msg.to_wire()


def test_relay_rewrites_ids_and_maps_answers_back() -> None:
    relay = QueryRelay()
    up1 = relay.on_query(query(7), ("10.244.1.5", 1000), now=0.0)
    up2 = relay.on_query(query(7), ("10.244.1.6", 2000), now=0.0)
    assert up1 is not None and up2 is not None
    assert up1[:2] != up2[:2]  # same client ID, distinct upstream IDs
    assert up1[2:] == query(7)[2:]
    back2 = relay.on_answer(up2, now=1.0)
    back1 = relay.on_answer(up1, now=1.0)
    assert back1 == (query(7), ("10.244.1.5", 1000))
    assert back2 == (query(7), ("10.244.1.6", 2000))
    assert relay.on_answer(up1, now=1.0) is None  # answered once only
    assert relay.stats.unmatched == 1 and relay.pending == 0


def test_relay_expires_and_bounds_pending() -> None:
    relay = QueryRelay(max_pending=2, timeout_s=5.0)
    first = relay.on_query(query(1), ("a", 1), now=0.0)
    relay.on_query(query(2), ("b", 1), now=1.0)
    relay.on_query(query(3), ("c", 1), now=2.0)
    assert relay.stats.evicted == 1 and relay.pending == 2
    assert first is not None and relay.on_answer(first, now=2.0) is None
    relay.expire(now=10.0)
    assert relay.pending == 0 and relay.stats.expired == 2


def test_relay_drops_short_datagrams() -> None:
    relay = QueryRelay()
    assert relay.on_query(b"\x00" * 5, ("a", 1), now=0.0) is None
    assert relay.on_answer(b"\x01", now=0.0) is None
    assert relay.stats.malformed == 2


@given(st.binary(max_size=64), st.binary(max_size=64))
def test_relay_never_raises(q: bytes, a: bytes) -> None:
    relay = QueryRelay()
    up = relay.on_query(q, ("c", 1), now=0.0)
    relay.on_answer(a, now=0.0)
    if up is not None:
        assert relay.on_answer(up, now=0.0) == (q, ("c", 1))


class FakeDns(asyncio.DatagramProtocol):
    """Answers every A query with 10.96.0.42, like the cluster DNS would."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(answer(data), addr)


def answer(data: bytes) -> bytes:
    q = dns.message.from_wire(data)
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(q.question[0].name, 5, "IN", "A", "10.96.0.42"))
    return r.to_wire()


async def serve_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            (n,) = struct.unpack("!H", await reader.readexactly(2))
            data = await reader.readexactly(n)
        except asyncio.IncompleteReadError:
            break
        out = answer(data)
        writer.write(struct.pack("!H", len(out)) + out)
        await writer.drain()
    writer.close()


@pytest.fixture
async def forwarder() -> object:
    loop = asyncio.get_running_loop()
    udp, _ = await loop.create_datagram_endpoint(FakeDns, local_addr=("127.0.0.1", 0))
    port = udp.get_extra_info("sockname")[1]
    tcp = await asyncio.start_server(serve_tcp, "127.0.0.1", port)
    fwd = DnsForwarder("127.0.0.1:0", f"127.0.0.1:{port}")
    await fwd.start()
    try:
        yield fwd
    finally:
        await fwd.close()
        udp.close()
        tcp.close()
        await tcp.wait_closed()


async def test_udp_queries_are_relayed(forwarder: DnsForwarder) -> None:
    loop = asyncio.get_running_loop()
    answers: list[bytes] = []

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            answers.append(data)

    tx, _ = await loop.create_datagram_endpoint(Client, remote_addr=forwarder.address)
    try:
        tx.sendto(query(4242))
        await wait_for(lambda: answers, 5, what="the forwarded answer")
        msg = dns.message.from_wire(answers[0])
        assert msg.id == 4242 and msg.rcode() == dns.rcode.NOERROR
        assert msg.answer[0][0].to_text() == "10.96.0.42"
    finally:
        tx.close()


async def test_tcp_queries_are_relayed(forwarder: DnsForwarder) -> None:
    reader, writer = await asyncio.open_connection(*forwarder.tcp_address)
    try:
        for qid in (1, 2):
            wire = query(qid)
            writer.write(struct.pack("!H", len(wire)) + wire)
            (n,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 5))
            msg = dns.message.from_wire(await reader.readexactly(n))
            assert msg.id == qid and msg.answer[0][0].to_text() == "10.96.0.42"
    finally:
        writer.close()


async def test_tcp_client_is_closed_when_upstream_is_down() -> None:
    fwd = DnsForwarder("127.0.0.1:0", "127.0.0.1:1")  # nothing listens on port 1
    await fwd.start()
    try:
        reader, writer = await asyncio.open_connection(*fwd.tcp_address)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    finally:
        await fwd.close()


def test_servfail_echoes_id_rd_and_question() -> None:
    q = dns.message.make_query("web.default.svc.cluster.local.", "A")
    q.id = 777
    reply = servfail(q.to_wire())
    assert reply is not None
    msg = dns.message.from_wire(reply)
    assert msg.id == 777 and msg.rcode() == dns.rcode.SERVFAIL
    assert msg.flags & dns.flags.QR and msg.flags & dns.flags.RD
    assert msg.question == q.question


@given(st.binary(max_size=80))
def test_servfail_never_raises(data: bytes) -> None:
    reply = servfail(data)
    assert reply is None or reply[:2] == data[:2]


async def test_udp_client_gets_servfail_at_once_when_upstream_is_down() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # closed again: ICMP port unreachable from now on
    fwd = DnsForwarder("127.0.0.1:0", f"127.0.0.1:{dead}")
    await fwd.start()
    loop = asyncio.get_running_loop()
    got: asyncio.Queue[bytes] = asyncio.Queue()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            got.put_nowait(data)

    tx, _ = await loop.create_datagram_endpoint(Client, remote_addr=fwd.address)
    try:
        tx.sendto(query(99))
        msg = dns.message.from_wire(await asyncio.wait_for(got.get(), 2))
        assert msg.id == 99 and msg.rcode() == dns.rcode.SERVFAIL
        assert fwd.relay.stats.servfail == 1
    finally:
        tx.close()
        await fwd.close()
