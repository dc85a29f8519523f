"""The userspace NodePort proxy on loopback: a loopback echo server stands in for ClusterIP:port."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from knemu.node_agent.kubeproxy.nodeport import NodePortProxy
from knemu.node_agent.kubeproxy.relays import NodePortRule, plan
from knemu.testing import free_port

from .._echo import echo_server


def test_plan_closes_changed_rules_before_opening_them() -> None:
    a = NodePortRule("TCP", 30080, "10.96.0.5", 80)
    b = NodePortRule("UDP", 30053, "10.96.0.6", 53)
    moved = NodePortRule("TCP", 30080, "10.96.0.7", 80)
    assert plan([], [a, b]) == ([], [a, b])
    assert plan([a, b], [b, moved]) == ([a], [moved])
    assert plan([a], [a]) == ([], [])


@pytest.fixture
async def backend() -> AsyncIterator[int]:
    async with echo_server("127.0.0.1", b"echo:") as port:
        yield port


@pytest.fixture
async def proxy() -> AsyncIterator[NodePortProxy]:
    p = NodePortProxy("127.0.0.1")
    try:
        yield p
    finally:
        await p.close()


async def test_tcp_node_port_relays_and_closes(proxy: NodePortProxy, backend: int) -> None:
    node_port = free_port("127.0.0.1", socket.SOCK_STREAM)
    rule = NodePortRule("TCP", node_port, "127.0.0.1", backend)
    await proxy.apply([rule])
    reader, writer = await asyncio.open_connection("127.0.0.1", node_port)
    writer.write(b"hello")
    assert await asyncio.wait_for(reader.readexactly(10), 5) == b"echo:hello"
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await proxy.apply([])
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", node_port)
    assert proxy.stats.connections == 1


async def test_udp_node_port_keeps_one_session_per_client(
    proxy: NodePortProxy, backend: int
) -> None:
    node_port = free_port("127.0.0.1", socket.SOCK_DGRAM)
    await proxy.apply([NodePortRule("UDP", node_port, "127.0.0.1", backend)])
    loop = asyncio.get_running_loop()
    got: asyncio.Queue[bytes] = asyncio.Queue()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            got.put_nowait(data)

    tx, _ = await loop.create_datagram_endpoint(Client, remote_addr=("127.0.0.1", node_port))
    try:
        for i in range(3):
            tx.sendto(b"q%d" % i)
        replies = {await asyncio.wait_for(got.get(), 5) for _ in range(3)}
        assert replies == {b"echo:q0", b"echo:q1", b"echo:q2"}
        assert proxy.stats.datagrams == 3
    finally:
        tx.close()


async def test_unreachable_backend_resets_the_client_at_once(proxy: NodePortProxy) -> None:
    node_port = free_port("127.0.0.1", socket.SOCK_STREAM)
    dead = free_port("127.0.0.1", socket.SOCK_STREAM)  # nothing listens: the connect is refused
    await proxy.apply([NodePortRule("TCP", node_port, "127.0.0.1", dead)])
    reader, writer = await asyncio.open_connection("127.0.0.1", node_port)
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(reader.readexactly(1), 5)
    writer.close()
    assert proxy.stats.connect_failures == 1


async def test_port_in_use_is_reported_and_others_still_served(
    proxy: NodePortProxy, backend: int
) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    busy = holder.getsockname()[1]
    free = free_port("127.0.0.1", socket.SOCK_STREAM)
    try:
        await proxy.apply(
            [
                NodePortRule("TCP", busy, "127.0.0.1", backend),
                NodePortRule("TCP", free, "127.0.0.1", backend),
            ]
        )
        assert ("TCP", busy) in proxy.stats.bind_errors
        reader, writer = await asyncio.open_connection("127.0.0.1", free)
        writer.write(b"x")
        assert await asyncio.wait_for(reader.readexactly(6), 5) == b"echo:x"
        writer.close()
    finally:
        holder.close()
