"""The api-server's pods/{name}/portforward proxy, to a real agent API on loopback.

The agent's pod handle points at 127.0.0.1, where the test runs a TCP echo server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace

import aiohttp
import pytest

from knemu.node_agent.dataplane.faults import Impairments
from knemu.node_agent.dataplane.flows import FlowLog
from knemu.node_agent.kubelet.api import KubeletApi
from knemu.node_agent.kubelet.capture import CaptureTaps
from knemu.portforward_frames import ClientDecoder, close_frame, frame, port_prefix
from knemu.testing import free_port

from .rest_env import NOW, UPGRADE, RestEnv, node, pod

PATH = "/api/v1/namespaces/default/pods/{}/portforward"


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(b"echo:" + data)
        await writer.drain()
    writer.close()


@pytest.fixture
async def agent() -> AsyncIterator[tuple[int, int]]:
    """(agent API port, echo port); the agent runs pod default/p only."""
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    handles = {"default/p": SimpleNamespace(ip="127.0.0.1", uid="uid-p")}
    pods = SimpleNamespace(handles=handles, runtime=None)
    api = KubeletApi(
        "n1", pods, FlowLog(), Impairments(), table=dict, metrics=str, cni=lambda: None,
        inject=lambda key, packet, now: None, captures=CaptureTaps(lambda: None, {}),
    )  # fmt: skip
    await api.start("127.0.0.1", 0)
    try:
        yield api.port, echo.sockets[0].getsockname()[1]
    finally:
        await api.stop()
        echo.close()
        await echo.wait_closed()


async def test_portforward_relays_to_the_pods_port(rest: RestEnv, agent: tuple[int, int]) -> None:
    api, echo = agent
    rest.store.create(node("n1", api), NOW)
    rest.store.create(pod("p", "n1"), NOW)
    url = rest.base + PATH.format("p")
    async with rest.http.ws_connect(
        url, params={"ports": str(echo)}, protocols=("v4.channel.k8s.io",)
    ) as ws:
        assert ws.protocol == "v4.channel.k8s.io"
        assert await asyncio.wait_for(ws.receive_bytes(), 10) == b"\x00" + port_prefix(echo)
        assert await asyncio.wait_for(ws.receive_bytes(), 10) == b"\x01" + port_prefix(echo)
        await ws.send_bytes(frame(0, b"ping"))
        decoder = ClientDecoder([echo])
        decoder.feed(b"\x00" + port_prefix(echo))
        decoder.feed(b"\x01" + port_prefix(echo))
        got = decoder.feed(await asyncio.wait_for(ws.receive_bytes(), 10))
        assert got is not None and got.data == b"echo:ping"
        await ws.send_bytes(close_frame(0))  # the echo server closes at EOF: so does the socket
        closing = await asyncio.wait_for(ws.receive(), 10)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_portforward_refusals_name_the_reason(rest: RestEnv, agent: tuple[int, int]) -> None:
    api, echo = agent
    rest.store.create(node("n1", api), NOW)
    rest.store.create(node("gone", free_port()), NOW)
    for name, where in (("p", "n1"), ("q", "n1"), ("r", "gone"), ("s", "")):
        rest.store.create(pod(name, where), NOW)
    ports = {"ports": str(echo)}
    status, body = await rest.call("GET", PATH.format("p"), params=ports)
    assert status == 400 and "portforward needs a websocket upgrade" in body["message"]
    status, body = await rest.call(
        "GET", PATH.format("p"), params={"ports": "80,x"}, headers=UPGRADE
    )
    assert status == 400 and "'x' is not a port" in body["message"]
    status, body = await rest.call("GET", PATH.format("q"), params=ports, headers=UPGRADE)
    assert status == 404 and 'node "n1" refused portforward to pod default/q' in body["message"]
    status, body = await rest.call("GET", PATH.format("r"), params=ports, headers=UPGRADE)
    assert status == 503 and 'node "gone" agent at' in body["message"]
    status, body = await rest.call("GET", PATH.format("s"), params=ports, headers=UPGRADE)
    assert status == 400 and "not scheduled to a node yet" in body["message"]
    status, body = await rest.call("GET", PATH.format("t"), params=ports, headers=UPGRADE)
    assert status == 404 and 'pods "t" not found' in body["message"]
