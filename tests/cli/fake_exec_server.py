"""A loopback stand-in for the api-server's pod exec/attach/log proxies (channel protocol v4/v5),
plus the few REST paths `knemu run` and `knemu get -w` need, with scripted answers.

The real proxies need a node agent with real containers; this fake speaks the same wire
protocol (docs/INTERFACES.md) so the CLI's side of it is tested over a real socket, including
cases a real cluster produces only by chance (a log stream outliving its container).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p1", "namespace": "default", "resourceVersion": "5"},
    "spec": {
        "nodeName": "node-1",
        "containers": [{"name": "main", "image": "tools"}, {"name": "side", "image": "x"}],
    },
    "status": {"phase": "Running"},
}


@dataclass
class FakeExec:
    url: str = ""
    queries: list[list[tuple[str, str]]] = field(default_factory=list)
    stdin_seen: list[bytes] = field(default_factory=list)
    created: dict[str, dict[str, Any]] = field(default_factory=dict)  # pods made by `run`
    deleted: list[str] = field(default_factory=list)
    run_exit_code: int | None = 3  # None: created pods stay Pending (unschedulable)
    running_reads: int = 0  # created pods read as Running this many times before they end
    hang_follow: bool = False  # a followed log stays open after its container ended
    reads: int = 0
    attach_exit_code: int | None = None  # None: no attach endpoint (404, as an older server)


def _pod_status(state: FakeExec) -> dict[str, Any]:
    if state.run_exit_code is None:
        return {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/0 nodes are available",
                }
            ],
        }
    terminated = {"exitCode": state.run_exit_code, "reason": "Error"}
    return {
        "phase": "Failed",
        "containerStatuses": [{"name": "c", "state": {"terminated": terminated}}],
    }


def _status(code: int) -> bytes:
    if code == 0:
        return b"\x03" + json.dumps({"status": "Success"}).encode()
    failure = {
        "status": "Failure",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }
    return b"\x03" + json.dumps(failure).encode()


def _app(state: FakeExec) -> web.Application:
    async def get_pod(request: web.Request) -> web.Response:
        created = state.created.get(request.match_info["name"])
        if created is not None:
            state.reads += 1
            if state.reads <= state.running_reads:
                return web.json_response(dict(created, status={"phase": "Running"}))
            return web.json_response(dict(created, status=_pod_status(state)))
        if request.match_info["name"] != "p1":
            body = {
                "kind": "Status",
                "status": "Failure",
                "reason": "NotFound",
                "code": 404,
                "message": f'pods "{request.match_info["name"]}" not found',
            }
            return web.json_response(body, status=404)
        return web.json_response(POD)

    async def exec_ws(request: web.Request) -> web.WebSocketResponse:
        state.queries.append(list(request.query.items()))
        ws = web.WebSocketResponse(protocols=("v5.channel.k8s.io", "v4.channel.k8s.io"))
        await ws.prepare(request)
        command = request.query.getall("command")
        if request.query.get("stdin") == "1":
            data = b""
            async for msg in ws:
                if msg.type != WSMsgType.BINARY:
                    break
                if msg.data == bytes([255, 0]):
                    break
                data += msg.data[1:]
            state.stdin_seen.append(data)
            await ws.send_bytes(b"\x01" + data.upper())
        await ws.send_bytes(b"\x01" + " ".join(command).encode() + b"\n")
        await ws.send_bytes(b"\x02warning\n")
        code = int(command[-1]) if command[-1].isdigit() else 0
        await ws.send_bytes(_status(code))
        await ws.close()
        return ws

    async def attach_ws(request: web.Request) -> web.StreamResponse:
        if state.attach_exit_code is None:
            raise web.HTTPNotFound()
        state.queries.append(list(request.query.items()))
        ws = web.WebSocketResponse(protocols=("v5.channel.k8s.io", "v4.channel.k8s.io"))
        await ws.prepare(request)
        await ws.send_bytes(b"\x01attached\n")
        if request.query.get("stdin") == "true":
            data = b""
            async for msg in ws:
                if msg.type != WSMsgType.BINARY or msg.data == bytes([255, 0]):
                    break
                data += msg.data[1:]
            state.stdin_seen.append(data)
            await ws.send_bytes(b"\x01" + data.upper())
        await ws.send_bytes(_status(state.attach_exit_code))
        await ws.close()
        return ws

    async def logs(request: web.Request) -> web.StreamResponse:
        text = f"log of {request.query.get('container')}\nline 2\n"
        if not (state.hang_follow and request.query.get("follow") == "true"):
            return web.Response(text=text)
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(text.encode())
        await asyncio.sleep(30)  # never ends by itself; the client must give up on it
        return resp

    async def create_pod(request: web.Request) -> web.Response:
        pod = await request.json()
        pod["metadata"]["resourceVersion"] = "9"
        state.created[pod["metadata"]["name"]] = pod
        return web.json_response(pod, status=201)

    async def delete_pod(request: web.Request) -> web.Response:
        state.deleted.append(request.match_info["name"])
        return web.json_response({"kind": "Status", "status": "Success"})

    async def watch_pods(request: web.Request) -> web.StreamResponse:
        # Nothing ever changes here: hold the watch for its timeoutSeconds, then end it.
        await asyncio.sleep(float(request.query.get("timeoutSeconds", "1")))
        return web.Response(text="")

    async def events(request: web.Request) -> web.Response:
        warning = {
            "type": "Warning",
            "reason": "FailedScheduling",
            "lastTimestamp": "x",
            "message": "0/0 nodes are available",
            "involvedObject": {"kind": "Pod"},
        }
        return web.json_response({"kind": "EventList", "items": [warning]})

    async def services(request: web.Request) -> web.StreamResponse:
        def svc(name: str, port: int) -> dict[str, Any]:
            return {
                "metadata": {"name": name, "namespace": "default"},
                "spec": {
                    "type": "ClusterIP",
                    "clusterIP": "10.96.0.9",
                    "ports": [{"port": port, "protocol": "TCP"}],
                },
            }

        if request.query.get("watch") != "true":
            state.queries.append(list(request.query.items()))
            return web.json_response(
                {
                    "kind": "ServiceList",
                    "metadata": {"resourceVersion": "41"},
                    "items": [svc("first", 80)],
                }
            )
        state.queries.append(list(request.query.items()))
        resp = web.StreamResponse()
        await resp.prepare(request)
        for etype, obj in (("ADDED", svc("second", 81)), ("MODIFIED", svc("first", 8080))):
            await resp.write(json.dumps({"type": etype, "object": obj}).encode() + b"\n")
        return resp

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/{ns}/services", services)
    app.router.add_post("/api/v1/namespaces/{ns}/pods", create_pod)
    app.router.add_get("/api/v1/namespaces/{ns}/pods", watch_pods)
    app.router.add_delete("/api/v1/namespaces/{ns}/pods/{name}", delete_pod)
    app.router.add_get("/api/v1/namespaces/{ns}/events", events)
    base = "/api/v1/namespaces/{ns}/pods/{name}"
    app.router.add_get(base, get_pod)
    app.router.add_get(base + "/exec", exec_ws)
    app.router.add_get(base + "/attach", attach_ws)
    app.router.add_get(base + "/log", logs)
    return app


@contextmanager
def fake_exec_server() -> Iterator[FakeExec]:
    """Serve the fake on 127.0.0.1:<free port> from a thread; stopped on exit."""
    state = FakeExec()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runner_box: dict[str, Any] = {}

    async def start() -> None:
        runner = web.AppRunner(_app(state), handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        state.url = f"http://127.0.0.1:{port}"
        runner_box["runner"] = runner
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    try:
        yield state
    finally:
        asyncio.run_coroutine_threadsafe(runner_box["runner"].cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
