"""The api-server's pods/{name}/attach proxy, to a fake agent on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from .rest_env import NOW, SUCCESS, UPGRADE, RestEnv, node

PATH = "/api/v1/namespaces/default/pods/p/attach"


async def _agent_attach(request: web.Request) -> web.StreamResponse:
    if request.match_info["container"] == "gone":
        return web.json_response({"message": "container gone is terminated"}, status=400)
    ws = web.WebSocketResponse(protocols=("v4.channel.k8s.io",))
    await ws.prepare(request)
    info = request.match_info
    flags = ",".join(f"{k}={v}" for k, v in sorted(request.query.items()))
    await ws.send_bytes(f"\x01{info['ns']}/{info['pod']}/{info['container']}: {flags}".encode())
    if request.query.get("stdin") == "1":
        msg = await ws.receive()
        await ws.send_bytes(b"\x01" + msg.data[1:].upper())
    await ws.send_bytes(SUCCESS)
    await ws.close()
    return ws


@pytest.fixture
async def agent() -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_get("/attach/{ns}/{pod}/{container}", _agent_attach)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def pod() -> dict[str, Any]:
    containers = [
        {"name": "main", "image": "tools", "stdin": True, "stdinOnce": True},
        {"name": "side", "image": "x"},
        {"name": "gone", "image": "x"},
    ]
    return {
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"nodeName": "n1", "containers": containers},
    }


async def test_attach_relays_with_its_flags(rest: RestEnv, agent: int) -> None:
    rest.store.create(node("n1", agent), NOW)
    rest.store.create(pod(), NOW)
    params = {"stdin": "true", "stdout": "true", "stderr": "true", "fromStart": "true",
              "tty": "false", "ignored": "x"}  # fmt: skip
    async with rest.http.ws_connect(rest.base + PATH, params=params) as ws:
        banner = await asyncio.wait_for(ws.receive_bytes(), 10)
        assert banner == b"\x01default/p/main: fromStart=1,stderr=1,stdin=1,stdout=1"
        await ws.send_bytes(b"\x00hi")
        assert await asyncio.wait_for(ws.receive_bytes(), 10) == b"\x01HI"
        assert await asyncio.wait_for(ws.receive_bytes(), 10) == SUCCESS


async def test_attach_refusals_name_the_reason(rest: RestEnv, agent: int) -> None:
    rest.store.create(node("n1", agent), NOW)
    rest.store.create(pod(), NOW)
    stdin = {"container": "side", "stdin": "true", "stdout": "true"}
    status, body = await rest.call("GET", PATH, params=stdin, headers=UPGRADE)
    assert status == 400 and body["reason"] == "BadRequest"
    assert 'container "side" of pod "p": it was not created with stdin: true' in body["message"]
    watch = {"container": "side", "stdout": "true"}  # without stdin the spec does not matter
    async with rest.http.ws_connect(rest.base + PATH, params=watch) as ws:
        assert await asyncio.wait_for(ws.receive_bytes(), 10) == b"\x01default/p/side: stdout=1"
    status, body = await rest.call("GET", PATH, params={"stdout": "true"})
    assert status == 400 and "attach needs a websocket upgrade" in body["message"]
    gone = {"container": "gone", "stdout": "true"}
    status, body = await rest.call("GET", PATH, params=gone, headers=UPGRADE)
    assert status == 400 and 'node "n1" refused attach to container "gone"' in body["message"]
