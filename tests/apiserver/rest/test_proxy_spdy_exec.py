"""exec over the SPDY/3.1 upgrade through the api-server (what kubectl does with
KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false): the v4 streams, each relayed to a fake agent's exec
websocket that upper-cases stdin to stdout, echoes it to stderr and ends with a status."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from knemu.apiserver.streaming import spdy_frames as f

from .rest_env import NOW, RestEnv, node, pod
from .test_proxy_spdy import upgrade

EXEC = "/api/v1/namespaces/default/pods/{}/exec?command=cat&stdin=true&stdout=true&stderr=true"


async def _fake_exec(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=("v4.channel.k8s.io",))
    await ws.prepare(request)
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.BINARY:
            break
        if msg.data == b"\xff\x00":  # stdin closed: the command ends
            await ws.send_bytes(b"\x03" + json.dumps({"status": "Success"}).encode())
            break
        if msg.data[:1] == b"\x00":
            await ws.send_bytes(b"\x01" + msg.data[1:].upper())
            await ws.send_bytes(b"\x02err:" + msg.data[1:])
    await ws.close()
    return ws


@pytest.fixture
async def exec_agent() -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_get("/exec/default/p/main", _fake_exec)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def _streams(*kinds: str) -> list[f.Frame]:
    return [f.SynStream(1 + 2 * i, {"streamtype": kind}) for i, kind in enumerate(kinds)]


async def test_exec_streams_are_relayed(rest: RestEnv, exec_agent: int) -> None:
    rest.store.create(node("n1", exec_agent), NOW)
    rest.store.create(pod("p", "n1"), NOW)
    head, client = await upgrade(rest, EXEC.format("p"), "v4.channel.k8s.io")
    assert head.startswith(b"HTTP/1.1 101 ") and b"v4.channel.k8s.io" in head
    await client.send(*_streams("error", "stdin", "stdout", "stderr"))
    await client.until(lambda got: all(f.SynReply(i, {}) in got for i in (1, 3, 5, 7)))
    await client.send(f.DataFrame(3, b"hello"))
    await client.until(lambda _: client.data(5) == b"HELLO")
    await client.send(f.DataFrame(3, b"", fin=True))
    await client.until(lambda _: all(client.ended(i) for i in (1, 5, 7)))
    assert client.data(7) == b"err:hello"
    assert json.loads(client.data(1)) == {"status": "Success"}


async def test_a_refused_exec_is_a_failure_status(rest: RestEnv, exec_agent: int) -> None:
    rest.store.create(node("n1", exec_agent), NOW)
    rest.store.create(pod("p", "n1"), NOW)
    path = EXEC.format("p").replace("stdin=true&", "") + "&container=side"
    _, client = await upgrade(rest, path, "v4.channel.k8s.io")
    await client.send(*_streams("error", "stdout", "stderr"))
    await client.until(lambda _: all(client.ended(i) for i in (1, 3, 5)))
    status = json.loads(client.data(1))
    assert status["status"] == "Failure" and 'node "n1" refused exec' in status["message"]


async def test_v4_must_be_offered(rest: RestEnv, exec_agent: int) -> None:
    rest.store.create(node("n1", exec_agent), NOW)
    rest.store.create(pod("p", "n1"), NOW)
    head, _ = await upgrade(rest, EXEC.format("p"), "v3.channel.k8s.io")
    assert head.startswith(b"HTTP/1.1 403 ")
