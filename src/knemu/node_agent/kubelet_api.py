"""The agent's HTTP API (the kubelet's port 10250), per docs/INTERFACES.md "Agent HTTP API".

* ``/exec`` speaks the Kubernetes channel protocol ``v4.channel.k8s.io`` (KEP-4006 documents v5):
  every binary websocket message starts with its channel byte, 0 stdin, 1 stdout, 2 stderr,
  3 status; the client closes stdin with [255, 0] (the v5 CLOSE signal).  The final status is
  the metav1.Status JSON that kubelet sends on channel 3.
* ``/attach`` joins a container's running process over the same protocol (``kubelet_attach``).
* ``/portForward`` forwards TCP to a pod's ports (``kubelet_portforward``).
* ``/flows`` is NDJSON, one ``FlowEvent.to_dict()`` per line, times in seconds since the epoch.
* ``/trace`` injects one probe packet as if the pod had sent it and reports the hops this node
  saw; the CLI collects the other nodes' hops from their ``/flows``.
* ``/cni`` is the CNI network configuration list the agent wrote (where: ``cni.conf_dir``).
* Errors are Kubernetes ``Status`` objects with the error's HTTP status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from knemu.errors import KnemuError, LocalError, NotFound, TooManyRequests
from knemu.node_agent import agent_trace
from knemu.node_agent.events import FlowEvent

if TYPE_CHECKING:
    from knemu.node_agent.agent import Agent

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

EXEC_PROTOCOLS = ("v4.channel.k8s.io", "v5.channel.k8s.io", "channel.k8s.io")
STDIN, STDOUT, STDERR, STATUS, CLOSE = 0, 1, 2, 3, 255
FOLLOW_QUEUE = 10_000  # events buffered per /flows follower; beyond that they are dropped
LOG_POLL_S = 0.2  # how often a followed log file is checked for new bytes
MAX_STREAMS = 256  # exec, attach and port-forward websockets open at once; more get 429


def status_body(exc: KnemuError) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": exc.message,
            "reason": exc.reason, "code": exc.http_status}  # fmt: skip


def error_response(exc: KnemuError) -> web.Response:
    return web.json_response(status_body(exc), status=exc.http_status)


def exit_status(code: int) -> bytes:
    """Channel-3 payload kubelet sends when the command ends (remotecommand/errorstream)."""
    if code == 0:
        return json.dumps({"metadata": {}, "status": "Success"}).encode()
    return json.dumps({
        "metadata": {}, "status": "Failure", "message": f"command terminated with exit code {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }).encode()  # fmt: skip


def tail_lines(data: bytes, lines: int | None) -> bytes:
    if lines is None:
        return data
    if lines <= 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


class KubeletApi:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._runner: web.AppRunner | None = None
        self.open_streams = 0
        self._wall_offset = time.time() - asyncio.get_running_loop().time()
        self.app = web.Application()
        r = self.app.router
        r.add_get("/healthz", self._healthz)
        r.add_get("/metrics", self._metrics)
        r.add_get("/exec/{ns}/{pod}/{container}", self._bounded(self._exec))
        r.add_post("/exec/{ns}/{pod}/{container}", self._bounded(self._exec))
        r.add_get("/attach/{ns}/{pod}/{container}", self._bounded(self._attach))
        r.add_get("/portForward/{ns}/{pod}", self._bounded(self._port_forward))
        r.add_get("/containerLogs/{ns}/{pod}/{container}", self._logs)
        r.add_get("/flows", self._flows)
        r.add_post("/flows/record", self._flows_record)
        r.add_post("/trace", self._trace)
        r.add_get("/table", self._table)
        r.add_get("/cni", self._cni)
        r.add_get("/chaos", self._chaos_list)
        r.add_post("/chaos", self._chaos_add)
        r.add_delete("/chaos", self._chaos_clear)

    async def start(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(
            self.app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()

    @property
    def port(self) -> int:
        assert self._runner is not None
        return int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def wall(self, loop_time: float) -> float:
        """Flow events carry the loop clock; the API speaks seconds since the epoch."""
        return loop_time + self._wall_offset

    def event_dict(self, event: FlowEvent) -> dict[str, Any]:
        out = event.to_dict()
        out["time"] = round(self.wall(event.time), 6)
        return out

    # -- simple GETs ----------------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _metrics(self, request: web.Request) -> web.Response:
        from knemu.node_agent.agent_metrics import render

        return web.Response(text=render(self.agent), content_type="text/plain", charset="utf-8")

    async def _table(self, request: web.Request) -> web.Response:
        snap = self.agent.router.table_snapshot()
        snap["node"] = self.agent.name
        snap["impairments"] = self.agent.faults.describe()
        policy = self.agent.policy  # None: this node does not enforce
        snap["network_policy"] = {"enforced": False} if policy is None else policy.snapshot()
        snap["host_ports"] = self.agent.pods.hostports.table.snapshot()
        return web.json_response(snap, dumps=lambda o: json.dumps(o, default=str))

    async def _cni(self, request: web.Request) -> web.Response:
        """The conflist this node wrote (``cni`` module), byte for byte."""
        conf = self.agent.cni
        if conf is None:
            return error_response(NotFound(f"node {self.agent.name} has no CNI config yet: "
                                           "its agent is still starting; try again"))  # fmt: skip
        return web.Response(text=conf.text, content_type="application/json")

    # -- chaos ----------------------------------------------------------------------------------

    async def _chaos_list(self, request: web.Request) -> web.Response:
        return web.json_response({"node": self.agent.name,
                                  "impairments": self.agent.faults.describe()})  # fmt: skip

    async def _chaos_add(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return error_response(LocalError("POST /chaos: the body must be a JSON object"))
        try:
            ident = self.agent.faults.add(body)
        except KnemuError as exc:
            return error_response(exc)
        body = {"node": self.agent.name, "id": ident, "impairments": self.agent.faults.describe()}
        return web.json_response(body, status=201)

    async def _chaos_clear(self, request: web.Request) -> web.Response:
        removed = self.agent.faults.clear(request.query.get("peer"))
        return web.json_response({"node": self.agent.name, "removed": removed})

    # -- flows and trace ----------------------------------------------------------------------

    def _flow_filter(self, request: web.Request) -> Callable[[FlowEvent], bool]:
        q = request.query
        try:
            since = float(q.get("since", "0")) - self._wall_offset
            port = int(q["port"]) if "port" in q else None
        except ValueError:
            raise LocalError("flows: since must be seconds and port a number") from None
        ip = q.get("ip") or None
        return lambda e: e.time >= since and agent_trace.touches(e, ip, port)

    async def _flows_record(self, request: web.Request) -> web.Response:
        """Record forwarded packets for ``seconds`` (default 10, at most 300) even with nobody
        following: `knemu trace` arms every node so their hops are in history afterwards."""
        try:
            seconds = float(request.query.get("seconds", "10"))
        except ValueError:
            return error_response(LocalError("POST /flows/record: seconds must be a number"))
        seconds = min(max(seconds, 0.1), 300.0)
        token = self.agent.flows.subscribe(lambda _event: None)
        asyncio.get_running_loop().call_later(seconds, self.agent.flows.unsubscribe, token)
        return web.json_response({"node": self.agent.name, "recording_s": seconds})

    async def _flows(self, request: web.Request) -> web.StreamResponse:
        try:
            match = self._flow_filter(request)
            limit = int(request.query.get("limit", "1000"))
        except (KnemuError, ValueError) as exc:
            return error_response(exc if isinstance(exc, KnemuError) else LocalError(str(exc)))
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for event in self.agent.flows.recent(limit, match):
            await resp.write(json.dumps(self.event_dict(event), default=str).encode() + b"\n")
        if request.query.get("follow") not in ("1", "true"):
            await resp.write_eof()
            return resp
        queue: asyncio.Queue[FlowEvent] = asyncio.Queue(FOLLOW_QUEUE)
        token = self.agent.flows.subscribe(lambda e: _offer(queue, e), match)
        try:
            while True:
                event = await queue.get()
                await resp.write(json.dumps(self.event_dict(event), default=str).encode() + b"\n")
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.agent.flows.unsubscribe(token)
        return resp

    async def _trace(self, request: web.Request) -> web.Response:
        try:
            probe = agent_trace.Probe.from_dict(await request.json())
        except ValueError:
            return error_response(LocalError("POST /trace: the body must be a JSON object"))
        except KnemuError as exc:
            return error_response(exc)
        handle = self.agent.pods.handles.get(probe.pod)
        if handle is None:
            where = f"pod {probe.pod} does not run on node {self.agent.name}"
            return error_response(NotFound(f"{where}; send the trace to the pod's node"))
        result = await agent_trace.run_probe(self.agent, probe, handle.ip)
        result["hops"] = [self.event_dict(e) for e in result["hops"]]
        result["time"] = self.wall(result["time"])
        return web.json_response(result, dumps=lambda o: json.dumps(o, default=str))

    # -- exec and logs --------------------------------------------------------------------------

    def _bounded(self, handler: Handler) -> Handler:
        """``handler`` with at most MAX_STREAMS of the node's streams open at once: each holds
        processes, pipes or sockets, so a flood of them is refused instead of exhausting fds."""

        async def bounded(request: web.Request) -> web.StreamResponse:
            if self.open_streams >= MAX_STREAMS:
                return error_response(TooManyRequests(
                    f"node {self.agent.name} already serves {MAX_STREAMS} exec/attach/"
                    "port-forward streams; retry when some have ended"
                ))  # fmt: skip
            self.open_streams += 1
            try:
                return await handler(request)
            finally:
                self.open_streams -= 1

        return bounded

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        m = request.match_info
        key = f"{m['ns']}/{m['pod']}"
        argv = request.query.getall("command", [])
        stdin = request.query.get("stdin") in ("1", "true")
        try:
            proc = await self.agent.pods.runtime.exec(key, m["container"], argv, stdin)
        except KnemuError as exc:
            return error_response(exc)
        ws = web.WebSocketResponse(protocols=EXEC_PROTOCOLS, max_msg_size=0)
        await ws.prepare(request)
        try:
            await _bridge(ws, proc)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        return ws

    async def _attach(self, request: web.Request) -> web.StreamResponse:
        from knemu.node_agent.kubelet_attach import serve_attach  # it imports this module

        return await serve_attach(request, self.agent.pods.runtime)

    async def _port_forward(self, request: web.Request) -> web.StreamResponse:
        from knemu.node_agent.kubelet_portforward import serve_portforward  # imports this module

        return await serve_portforward(request, self.agent.pods.handles, self.agent.name)

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        m = request.match_info
        key = f"{m['ns']}/{m['pod']}"
        try:
            path = self.agent.pods.runtime.log_path(key, m["container"])
            lines = int(request.query["tailLines"]) if "tailLines" in request.query else None
            if request.query.get("previous") in ("1", "true"):
                data = self.agent.pods.runtime.runner(key, m["container"]).previous_log()
                return web.Response(body=tail_lines(data, lines), content_type="text/plain")
        except KnemuError as exc:
            return error_response(exc)
        except ValueError:
            return error_response(LocalError("tailLines must be a number"))
        follow = request.query.get("follow") in ("1", "true")
        resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await resp.prepare(request)
        offset = await _send_file(resp, path, lines)
        while follow and key in self.agent.pods.handles:
            await asyncio.sleep(LOG_POLL_S)  # tail -f: the log is a plain file
            offset = await _send_from(resp, path, offset)
        await resp.write_eof()
        return resp


def _offer(queue: asyncio.Queue[FlowEvent], event: FlowEvent) -> None:
    with contextlib.suppress(asyncio.QueueFull):  # a slow reader loses events, not the router
        queue.put_nowait(event)


async def _send_file(resp: web.StreamResponse, path: Path, lines: int | None) -> int:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    await resp.write(tail_lines(data, lines))
    return len(data)


async def _send_from(resp: web.StreamResponse, path: Path, offset: int) -> int:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return offset
    if data:
        await resp.write(data)
    return offset + len(data)


async def _bridge(ws: web.WebSocketResponse, proc: asyncio.subprocess.Process) -> None:
    """Pump stdout/stderr to channels 1/2 and channel 0 to stdin; then send the status."""

    async def pump(stream: asyncio.StreamReader | None, channel: int) -> None:
        if stream is None:
            return
        while chunk := await stream.read(65536):
            await ws.send_bytes(bytes([channel]) + chunk)

    async def feed() -> None:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            data: bytes = msg.data
            if data[0] == STDIN and proc.stdin is not None:
                proc.stdin.write(data[1:])
                with contextlib.suppress(ConnectionError):
                    await proc.stdin.drain()
            elif data[0] == CLOSE and proc.stdin is not None and data[1:2] == bytes([STDIN]):
                proc.stdin.close()
        if proc.returncode is None:
            proc.kill()  # the client went away: so does the command

    reader = asyncio.create_task(feed())
    try:
        await asyncio.gather(pump(proc.stdout, STDOUT), pump(proc.stderr, STDERR))
        code = await proc.wait()
        await ws.send_bytes(bytes([STATUS]) + exit_status(code))
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await ws.close()
