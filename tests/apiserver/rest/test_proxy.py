"""Proxies to a node agent (a fake agent on loopback): exec websocket, logs, node proxy, 503."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from kubernetes import client as k8s_client, config as k8s_config
from kubernetes.stream import stream

from knemu.apiserver.rest.proxy import kubelet_address
from knemu.errors import Unavailable
from knemu.testing import free_port, write_kubeconfig

from .rest_env import NOW, SUCCESS, UPGRADE, RestEnv, node, pod


async def _agent_exec(request: web.Request) -> web.StreamResponse:
    if request.match_info["container"] == "side" and request.query.get("command") == "fail":
        return web.json_response({"message": "container side is not running"}, status=404)
    ws = web.WebSocketResponse(protocols=("v4.channel.k8s.io",))
    await ws.prepare(request)
    info = request.match_info
    command = " ".join(request.query.getall("command", []))
    banner = f"{info['ns']}/{info['pod']}/{info['container']}: {command}"
    await ws.send_bytes(b"\x01" + banner.encode())
    if request.query.get("stdin") == "1":
        async for msg in ws:
            if msg.data == b"\xff\x00":  # stdin closed
                break
            await ws.send_bytes(b"\x01" + msg.data[1:].upper())
    await ws.send_bytes(SUCCESS)
    await ws.close()
    return ws


async def _agent_logs(request: web.Request) -> web.StreamResponse:
    info = request.match_info
    text = f"log of {info['container']} follow={request.query.get('follow')} "
    text += f"tail={request.query.get('tailLines')}\n"
    return web.Response(text=text)


async def _agent_echo(request: web.Request) -> web.Response:
    body = {
        "method": request.method,
        "path": request.path,
        "query": dict(request.query),
        "body": (await request.read()).decode(),
    }
    return web.json_response(body, status=201 if request.method == "POST" else 200)


@pytest.fixture
async def agent() -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_get("/exec/{ns}/{pod}/{container}", _agent_exec)
    app.router.add_get("/containerLogs/{ns}/{pod}/{container}", _agent_logs)
    app.router.add_route("*", "/{tail:.*}", _agent_echo)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def test_kubelet_address() -> None:
    assert kubelet_address(node("n", 1234, "192.168.59.3")) == ("192.168.59.3", 1234)
    bare = {
        "metadata": {"name": "n2"},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]},
    }
    assert kubelet_address(bare) == ("10.0.0.2", 10250)
    with pytest.raises(Unavailable, match='node "n3" has no InternalIP'):
        kubelet_address({"metadata": {"name": "n3"}, "status": {}})


async def test_exec_relays_frames_both_ways(rest: RestEnv, agent: int) -> None:
    rest.store.create(node("n1", agent), NOW)
    rest.store.create(pod("p", "n1"), NOW)
    url = rest.base + "/api/v1/namespaces/default/pods/p/exec"
    params = [("command", "cat"), ("command", "-"), ("stdin", "true"), ("stdout", "true")]
    async with rest.http.ws_connect(url, params=params, protocols=("v4.channel.k8s.io",)) as ws:
        assert ws.protocol == "v4.channel.k8s.io"
        first = await asyncio.wait_for(ws.receive_bytes(), 10)
        assert first == b"\x01default/p/main: cat -"
        await ws.send_bytes(b"\x00hello")
        assert await asyncio.wait_for(ws.receive_bytes(), 10) == b"\x01HELLO"
        await ws.send_bytes(b"\xff\x00")
        assert await asyncio.wait_for(ws.receive_bytes(), 10) == SUCCESS
        closing = await asyncio.wait_for(ws.receive(), 10)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_exec_named_container_and_errors(rest: RestEnv, agent: int) -> None:
    rest.store.create(node("n1", agent), NOW)
    rest.store.create(pod("p", "n1"), NOW)
    rest.store.create(pod("pending", ""), NOW)
    url = rest.base + "/api/v1/namespaces/default/pods/p/exec"
    async with rest.http.ws_connect(url, params={"command": "ls", "container": "side"}) as ws:
        assert await asyncio.wait_for(ws.receive_bytes(), 10) == b"\x01default/p/side: ls"
    status, body = await rest.call(
        "GET", "/api/v1/namespaces/default/pods/p/exec", params={"container": "nope"}
    )
    assert status == 400 and "choose one of main, side" in body["message"]
    status, body = await rest.call("GET", "/api/v1/namespaces/default/pods/pending/exec")
    assert status == 400 and "not scheduled" in body["message"]
    status, body = await rest.call("GET", "/api/v1/namespaces/default/pods/ghost/exec")
    assert status == 404
    status, body = await rest.call("GET", "/api/v1/namespaces/default/pods/p/exec")
    assert status == 400 and "needs a websocket upgrade" in body["message"]
    refused = {"command": "fail", "container": "side"}
    status, body = await rest.call(
        "GET", "/api/v1/namespaces/default/pods/p/exec", params=refused, headers=UPGRADE
    )
    assert status == 404 and 'node "n1" refused exec in container "side"' in body["message"]


async def test_logs(rest: RestEnv, agent: int) -> None:
    rest.store.create(node("n1", agent), NOW)
    rest.store.create(pod("p", "n1"), NOW)
    params = {"follow": "true", "tailLines": "5", "container": "side"}
    status, text = await rest.call("GET", "/api/v1/namespaces/default/pods/p/log", params=params)
    assert status == 200 and text == "log of side follow=true tail=5\n"


async def test_node_proxy_any_method(rest: RestEnv, agent: int) -> None:
    rest.store.create(node("n1", agent), NOW)
    status, body = await rest.call("GET", "/api/v1/nodes/n1/proxy/table", params={"x": "1"})
    assert status == 200 and body["path"] == "/table" and body["query"] == {"x": "1"}
    status, body = await rest.call("POST", "/api/v1/nodes/n1/proxy/chaos", json={"loss": 0.5})
    assert status == 201 and body["method"] == "POST" and json.loads(body["body"]) == {"loss": 0.5}
    status, body = await rest.call("DELETE", "/api/v1/nodes/n1/proxy/chaos", params={"peer": "n2"})
    assert status == 200 and body["method"] == "DELETE" and body["query"] == {"peer": "n2"}


async def test_unreachable_agent_is_503_naming_the_node(rest: RestEnv) -> None:
    rest.store.create(node("n9", free_port()), NOW)
    rest.store.create(pod("p", "n9"), NOW)
    status, body = await rest.call("GET", "/api/v1/nodes/n9/proxy/healthz")
    assert (
        status == 503 and 'node "n9"' in body["message"] and body["reason"] == "ServiceUnavailable"
    )
    status, body = await rest.call("GET", "/api/v1/namespaces/default/pods/p/log")
    assert status == 503 and 'node "n9"' in body["message"]
    status, body = await rest.call(
        "GET", "/api/v1/namespaces/default/pods/p/exec", params={"command": "ls"}, headers=UPGRADE
    )
    assert status == 503 and 'node "n9"' in body["message"]
    status, body = await rest.call("GET", "/api/v1/nodes/missing/proxy/healthz")
    assert status == 404


def _official_exec(kubeconfig: Path) -> tuple[str, Any]:
    with k8s_config.new_client_from_config(str(kubeconfig)) as api_client:
        core = k8s_client.CoreV1Api(api_client)
        resp = stream(
            core.connect_get_namespaced_pod_exec,
            "p",
            "default",
            command=["echo", "hi"],
            stdout=True,
            stderr=True,
            stdin=False,
            tty=False,
            _preload_content=False,
        )
        resp.run_forever(timeout=10)
        out = resp.read_stdout()
        status = resp.read_channel(3)
        resp.close()
        return out, status


async def test_exec_with_the_official_client(rest: RestEnv, agent: int, tmp_path: Path) -> None:
    rest.store.create(node("n1", agent), NOW)
    rest.store.create(pod("p", "n1"), NOW)
    kubeconfig = write_kubeconfig(rest.admin, tmp_path / "kubeconfig")
    out, status = await asyncio.to_thread(_official_exec, kubeconfig)
    assert out == "default/p/main: echo hi"
    assert json.loads(status) == {"status": "Success"}
