"""The agent's /portForward websocket to TCP servers on loopback (no namespaces needed).

The fake agent's pod handles point at 127.0.0.1, where the test runs an echo server (it
upper-cases what it reads and closes at EOF, so a half-close shows) and knows a closed port.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from types import SimpleNamespace

import aiohttp
import pytest

from knemu.portforward_frames import ClientDecoder, Received, close_frame, frame, port_prefix

from .kubelet_helpers import make_kubelet_api

PROTOCOLS = ("v4.channel.k8s.io",)


def closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _upper(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo upper-cased until EOF, then say how much came and close."""
    total = 0
    while data := await reader.read(65536):
        total += len(data)
        writer.write(data.upper())
        await writer.drain()
    writer.write(f"[eof after {total}]".encode())
    await writer.drain()
    writer.close()


@pytest.fixture
async def env() -> AsyncIterator[tuple[str, int]]:
    echo = await asyncio.start_server(_upper, "127.0.0.1", 0)
    handles = {"default/web": SimpleNamespace(ip="127.0.0.1", uid="uid-1")}
    server = make_kubelet_api(SimpleNamespace(handles=handles, runtime=None))
    await server.start("127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.port}", echo.sockets[0].getsockname()[1]
    finally:
        await server.stop()
        echo.close()
        await echo.wait_closed()


async def collect(ws: aiohttp.ClientWebSocketResponse, ports: list[int]) -> list[Received]:
    """Every message until the server closes, decoded (which checks the port prefixes)."""
    decoder, out = ClientDecoder(ports), list[Received]()
    while True:
        msg = await asyncio.wait_for(ws.receive(), 10)
        if msg.type != aiohttp.WSMsgType.BINARY:
            return out
        got = decoder.feed(msg.data)
        if got is not None:
            out.append(got)


async def test_forwards_both_ways_and_half_closes(env: tuple[str, int]) -> None:
    base, echo = env
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(
            f"{base}/portForward/default/web", params={"port": str(echo)}, protocols=PROTOCOLS
        ) as ws,  # fmt: skip
    ):
        assert ws.protocol == "v4.channel.k8s.io"
        # The raw prefixes first, on the data then the error channel, as the kubelet sends.
        assert await asyncio.wait_for(ws.receive_bytes(), 10) == b"\x00" + port_prefix(echo)
        assert await asyncio.wait_for(ws.receive_bytes(), 10) == b"\x01" + port_prefix(echo)
        await ws.send_bytes(frame(0, b"hello "))
        await ws.send_bytes(frame(0, b"pod"))
        await ws.send_bytes(close_frame(0))  # our EOF reaches the server as a FIN
        decoder = ClientDecoder([echo])
        for prefix in (b"\x00", b"\x01"):
            decoder.feed(prefix + port_prefix(echo))
        data = b""
        while not data.endswith(b"]"):
            got = decoder.feed(await asyncio.wait_for(ws.receive_bytes(), 10))
            data += got.data if got else b""
        assert data == b"HELLO POD[eof after 9]"
        assert (await asyncio.wait_for(ws.receive(), 10)).type in (
            aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)  # fmt: skip


async def test_a_closed_port_is_reported_on_its_error_channel(env: tuple[str, int]) -> None:
    base, echo = env
    closed = closed_port()
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(
            f"{base}/portForward/default/web",
            params={"port": f"{closed},{echo}"},
            protocols=PROTOCOLS,
        ) as ws,  # fmt: skip
    ):
        await ws.send_bytes(frame(2, b"x"))
        await ws.send_bytes(close_frame(1))
        got = await collect(ws, [closed, echo])
    errors = [r for r in got if r.error]
    assert [r.index for r in errors] == [0]
    assert errors[0].error.startswith(f"error forwarding port {closed} to pod default/web, uid")
    assert "connection refused" in errors[0].error
    assert b"".join(r.data for r in got if r.index == 1) == b"X[eof after 1]"


async def test_refusals_before_the_upgrade(env: tuple[str, int]) -> None:
    base, _ = env
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/portForward/default/other", params={"port": "80"}) as r:
            assert r.status == 404
            assert "pod default/other does not run on node node-1" in (await r.json())["message"]
        async with http.get(f"{base}/portForward/default/web", params={"port": "0"}) as r:
            assert r.status == 400 and "'0' is not a port" in (await r.json())["message"]
        async with http.get(f"{base}/portForward/default/web") as r:
            assert r.status == 400 and "at least one port" in (await r.json())["message"]
