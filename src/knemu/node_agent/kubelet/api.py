"""The agent's HTTP API (the kubelet's port 10250), per docs/INTERFACES.md "Agent HTTP API".

* ``/exec`` speaks the Kubernetes channel protocol ``v4.channel.k8s.io`` (KEP-4006 documents v5):
  every binary websocket message starts with its channel byte, 0 stdin, 1 stdout, 2 stderr,
  3 status; the client closes stdin with [255, 0] (the v5 CLOSE signal).  The final status is
  the metav1.Status JSON that kubelet sends on channel 3.
* ``/attach`` joins a container's running process over the same protocol (``attach``).
* ``/portForward`` forwards TCP to a pod's ports (``port_forward``).
* ``/flows`` is NDJSON, one ``FlowEvent.to_dict()`` per line, times in seconds since the epoch.
* ``/trace`` injects one probe packet as if the pod had sent it and reports the hops this node
  saw; the CLI collects the other nodes' hops from their ``/flows``.
* ``/capture`` streams pcapng/pcap of the underlay or a pod's eth0 (``capture``).
* ``/lifecycle`` kills or freezes the node on request (``lifecycle``, for the console).
* ``/cni`` is the CNI network configuration list the agent wrote (where: ``cni.conf_dir``).
* Errors are Kubernetes ``Status`` objects with the error's HTTP status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from aiohttp import WSMsgType, web

from knemu.errors import KnemuError, LocalError, NotFound, TooManyRequests
from knemu.node_agent.cni.conflist import CniConfig
from knemu.node_agent.dataplane import trace as agent_trace
from knemu.node_agent.dataplane.faults import Impairments
from knemu.node_agent.dataplane.flows import FlowLog
from knemu.node_agent.events import FlowEvent
from knemu.node_agent.kubelet.attach import serve_attach
from knemu.node_agent.kubelet.capture import CaptureTaps, serve_capture
from knemu.node_agent.kubelet.lifecycle import serve_lifecycle
from knemu.node_agent.kubelet.logs import serve_logs
from knemu.node_agent.kubelet.port_forward import serve_portforward
from knemu.node_agent.kubelet.responses import (
    CLOSE,
    EXEC_PROTOCOLS,
    STATUS,
    STDERR,
    STDIN,
    STDOUT,
    error_response,
    exit_status,
)
from knemu.node_agent.kubelet.stats import StatsApi
from knemu.node_agent.runtime.pods import PodHandle, PodRuntime

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

FOLLOW_QUEUE = 10_000  # events buffered per /flows follower; beyond that they are dropped
MAX_STREAMS = 256  # exec, attach and port-forward websockets open at once; more get 429


class RunningPods(Protocol):
    """The pods this node runs, as the API reads them (``PodSync`` in the agent)."""

    @property
    def handles(self) -> Mapping[str, PodHandle]: ...

    @property
    def runtime(self) -> PodRuntime: ...


class KubeletApi:
    """The HTTP API over the node's parts it serves.  ``table``, ``metrics`` and ``cni`` are
    read at request time (the agent composes them); ``inject`` feeds a trace probe to the
    router as if the pod had sent it; ``captures`` taps the node's adapters for ``/capture``."""

    def __init__(
        self,
        node_name: str,
        pods: RunningPods,
        flows: FlowLog,
        faults: Impairments,
        *,
        table: Callable[[], dict[str, Any]],
        metrics: Callable[[], str],
        cni: Callable[[], CniConfig | None],
        inject: agent_trace.Inject,
        captures: CaptureTaps,
    ) -> None:
        self.name = node_name
        self.pods = pods
        self.flows = flows
        self.faults = faults
        self._table_of = table
        self._metrics_text = metrics
        self._cni_of = cni
        self._inject = inject
        self._runner: web.AppRunner | None = None
        self.open_streams = 0
        self.captures = captures
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
        stats = StatsApi(lambda: self.pods.runtime, lambda: self.name)
        r.add_get("/stats/summary", stats.handle)
        r.add_get("/capture", self._capture)
        r.add_post("/lifecycle", self._lifecycle)
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
        text = self._metrics_text()
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    async def _table(self, request: web.Request) -> web.Response:
        snap = self._table_of()
        return web.json_response(snap, dumps=lambda o: json.dumps(o, default=str))

    async def _cni(self, request: web.Request) -> web.Response:
        """The conflist this node wrote (``cni.conflist``), byte for byte."""
        conf = self._cni_of()
        if conf is None:
            return error_response(NotFound(f"node {self.name} has no CNI config yet: "
                                           "its agent is still starting; try again"))  # fmt: skip
        return web.Response(text=conf.text, content_type="application/json")

    # -- chaos ----------------------------------------------------------------------------------

    async def _chaos_list(self, request: web.Request) -> web.Response:
        return web.json_response({"node": self.name,
                                  "impairments": self.faults.describe()})  # fmt: skip

    async def _chaos_add(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return error_response(LocalError("POST /chaos: the body must be a JSON object"))
        try:
            ident = self.faults.add(body)
        except KnemuError as exc:
            return error_response(exc)
        body = {"node": self.name, "id": ident, "impairments": self.faults.describe()}
        return web.json_response(body, status=201)

    async def _chaos_clear(self, request: web.Request) -> web.Response:
        removed = self.faults.clear(request.query.get("peer"))
        return web.json_response({"node": self.name, "removed": removed})

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
        token = self.flows.subscribe(lambda _event: None)
        asyncio.get_running_loop().call_later(seconds, self.flows.unsubscribe, token)
        return web.json_response({"node": self.name, "recording_s": seconds})

    async def _flows(self, request: web.Request) -> web.StreamResponse:
        try:
            match = self._flow_filter(request)
            limit = int(request.query.get("limit", "1000"))
        except (KnemuError, ValueError) as exc:
            return error_response(exc if isinstance(exc, KnemuError) else LocalError(str(exc)))
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for event in self.flows.recent(limit, match):
            await resp.write(json.dumps(self.event_dict(event), default=str).encode() + b"\n")
        if request.query.get("follow") not in ("1", "true"):
            await resp.write_eof()
            return resp
        queue: asyncio.Queue[FlowEvent] = asyncio.Queue(FOLLOW_QUEUE)
        token = self.flows.subscribe(lambda e: _offer(queue, e), match)
        try:
            while True:
                event = await queue.get()
                await resp.write(json.dumps(self.event_dict(event), default=str).encode() + b"\n")
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.flows.unsubscribe(token)
        return resp

    async def _trace(self, request: web.Request) -> web.Response:
        try:
            probe = agent_trace.Probe.from_dict(await request.json())
        except ValueError:
            return error_response(LocalError("POST /trace: the body must be a JSON object"))
        except KnemuError as exc:
            return error_response(exc)
        handle = self.pods.handles.get(probe.pod)
        if handle is None:
            where = f"pod {probe.pod} does not run on node {self.name}"
            return error_response(NotFound(f"{where}; send the trace to the pod's node"))
        result = await agent_trace.run_probe(self.flows, self._inject, self.name, probe, handle.ip)
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
                    f"node {self.name} already serves {MAX_STREAMS} exec/attach/"
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
            proc = await self.pods.runtime.exec(key, m["container"], argv, stdin)
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
        return await serve_attach(request, self.pods.runtime)

    async def _port_forward(self, request: web.Request) -> web.StreamResponse:
        return await serve_portforward(request, self.pods.handles, self.name)

    async def _capture(self, request: web.Request) -> web.StreamResponse:
        return await serve_capture(request, self.captures, self.name, self._wall_offset)

    async def _lifecycle(self, request: web.Request) -> web.Response:
        return await serve_lifecycle(request, self.name)

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        m = request.match_info
        key = f"{m['ns']}/{m['pod']}"
        try:
            runner = self.pods.runtime.runner(key, m["container"])
            return await serve_logs(request, runner, m["pod"], runner.spec.name,
                                    lambda: key in self.pods.handles)  # fmt: skip
        except KnemuError as exc:
            return error_response(exc)


def _offer(queue: asyncio.Queue[FlowEvent], event: FlowEvent) -> None:
    with contextlib.suppress(asyncio.QueueFull):  # a slow reader loses events, not the router
        queue.put_nowait(event)


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
