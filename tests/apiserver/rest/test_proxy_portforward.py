"""The api-server's pods/{name}/portforward proxy, to a real agent API on loopback (the
``agent`` fixture: its pod handle points at 127.0.0.1, where a TCP echo server runs)."""

from __future__ import annotations

import asyncio

import aiohttp

from knemu.portforward_frames import ClientDecoder, close_frame, frame, port_prefix
from knemu.testing import free_port

from .rest_env import NOW, UPGRADE, RestEnv, node, pod

PATH = "/api/v1/namespaces/default/pods/{}/portforward"


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
