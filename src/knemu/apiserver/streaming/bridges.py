"""SPDY streams to the agent's websockets: port-forward, exec and attach as kubectl sends them.

Port-forward (``portforward.k8s.io``, client-go ``tools/portforward``): for every local
connection kubectl opens two streams with the same ``requestID`` and ``port`` headers,
``streamType: error`` then ``streamType: data``.  Each pair becomes one agent websocket
(``/portForward/{ns}/{pod}?port=P``, framing in ``knemu.portforward_frames``): data both ways,
kubectl's FIN on the data stream as knemu's half-close ``[255, 0]``, the agent's error channel
to the error stream.  Both streams are closed when the agent's websocket ends; kubectl reads
the error stream to its end before it lets the connection go.

exec/attach (``v4.channel.k8s.io``, client-go ``tools/remotecommand``): the streams
``error``, ``stdin``, ``stdout``, ``stderr`` and ``resize`` the request's options ask for
(kubelet ``remotecommand/httpstream.go``: error always, stderr not with a tty, resize only
with one), then one agent websocket: stdin to channel 0 (its FIN as ``[255, 0]``), channels 1,
2 and 3 to stdout, stderr and error.  The agent has no terminal resizing, so resize messages
are read and dropped.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType

from knemu.apiserver.streaming.spdy_connection import SpdyConnection, SpdyStream
from knemu.errors import KnemuError
from knemu.portforward_frames import ClientDecoder, close_frame, frame
from knemu.tasks import until_first_done

STREAMS_TIMEOUT_S = 30.0  # kubelet's streamCreationTimeout
STDIN, STDOUT, STDERR, STATUS, CLOSE = 0, 1, 2, 3, 255

OpenPort = Callable[[int], Awaitable[Any]]  # port -> the agent's websocket (aiohttp client)
OpenChannels = Callable[[], Awaitable[Any]]


async def _relay_stdin(stream: SpdyStream, ws: Any) -> None:
    """The client's stdin to the agent's channel 0, then its end as ``[255, 0]``."""
    while chunk := await stream.read():
        await ws.send_bytes(bytes([STDIN]) + chunk)
    await ws.send_bytes(bytes([CLOSE, STDIN]))


async def _drain(stream: SpdyStream) -> None:
    while await stream.read():
        pass


# ---- port-forward -------------------------------------------------------------------------------


def _port_of(stream: SpdyStream) -> int | None:
    value = stream.header("port")
    return int(value) if value.isdigit() and 1 <= int(value) <= 65535 else None


async def serve_portforward(connection: SpdyConnection, open_port: OpenPort, pod: str) -> None:
    """Pair the streams kubectl opens and forward each pair until the connection ends."""
    pending: dict[str, dict[str, SpdyStream]] = {}
    tasks: set[asyncio.Task[None]] = set()
    try:
        while (stream := await connection.accept()) is not None:
            kind, request_id = stream.header("streamType"), stream.header("requestID")
            port = _port_of(stream)
            if kind not in ("error", "data") or port is None:
                # kubelet rejects such a stream; kubectl never sends one
                connection.session.reset_stream(stream.stream_id)
                await connection.flush()
                continue
            pair = pending.setdefault(request_id, {})
            pair[kind] = stream
            if len(pair) == 2:
                del pending[request_id]
                task = asyncio.create_task(
                    _forward(pair["error"], pair["data"], port, open_port, pod),
                    name=f"spdy-portforward-{port}-{request_id}",
                )
                tasks.add(task)
                task.add_done_callback(tasks.discard)
    finally:
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _forward(
    error: SpdyStream, data: SpdyStream, port: int, open_port: OpenPort, pod: str
) -> None:
    try:
        ws = await open_port(port)
    except KnemuError as exc:
        await error.write(f"error forwarding port {port} to pod {pod}: {exc.message}".encode())
        await error.close()
        await data.close()
        return
    decoder = ClientDecoder([port])

    async def pod_to_client() -> None:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                break
            received = decoder.feed(msg.data)
            if received is not None and received.data:
                await data.write(received.data)
            elif received is not None and received.error:
                await error.write(received.error.encode())

    async def client_to_pod() -> None:
        while chunk := await data.read():
            await ws.send_bytes(frame(0, chunk))
        await ws.send_bytes(close_frame(0))
        await asyncio.Event().wait()  # the pod side decides when the forward ends

    try:
        await until_first_done(("pf-pod-to-client", pod_to_client()),
                               ("pf-client-to-pod", client_to_pod()))  # fmt: skip
    finally:
        await ws.close()
        await data.close()
        await error.close()


# ---- exec and attach ----------------------------------------------------------------------------


def expected_streams(query: dict[str, bool]) -> set[str]:
    """The stream types a v4 exec/attach client opens for these options (kubelet's count)."""
    tty = query.get("tty", False)
    wanted = {"error"}
    wanted |= {kind for kind in ("stdin", "stdout") if query.get(kind, False)}
    if query.get("stderr", False) and not tty:
        wanted.add("stderr")
    if tty:
        wanted.add("resize")
    return wanted


async def _collect(connection: SpdyConnection, wanted: set[str]) -> dict[str, SpdyStream]:
    streams: dict[str, SpdyStream] = {}
    while not wanted <= streams.keys():
        stream = await connection.accept()
        if stream is None:
            break
        streams[stream.header("streamType")] = stream
    return streams


async def serve_channels(
    connection: SpdyConnection, open_channels: OpenChannels, wanted: set[str]
) -> None:
    """exec or attach: wait for the client's streams, then relay them to the agent."""
    try:
        streams = await asyncio.wait_for(_collect(connection, wanted), STREAMS_TIMEOUT_S)
    except TimeoutError:
        return  # kubelet gives up the same way: the client did not open its streams in time
    if "error" not in streams:
        return
    error = streams["error"]
    try:
        ws = await open_channels()
    except KnemuError as exc:
        await error.write(_failure(exc))
        await _close_all(streams)
        return
    outputs = {STDOUT: streams.get("stdout"), STDERR: streams.get("stderr"), STATUS: error}

    async def agent_to_client() -> None:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                break
            if msg.data and (target := outputs.get(msg.data[0])) is not None:
                await target.write(msg.data[1:])

    async def client_to_agent() -> None:
        idle = [_drain(s) for k, s in streams.items() if k == "resize"]
        if "stdin" in streams:
            idle.append(_relay_stdin(streams["stdin"], ws))
        await asyncio.gather(*idle)
        await asyncio.Event().wait()  # the agent decides when the command has ended

    try:
        await until_first_done(("exec-agent-to-client", agent_to_client()),
                               ("exec-client-to-agent", client_to_agent()))  # fmt: skip
    finally:
        await ws.close()
        await _close_all(streams)


async def _close_all(streams: dict[str, SpdyStream]) -> None:
    for stream in streams.values():
        await stream.close()


def _failure(exc: KnemuError) -> bytes:
    """The metav1.Status a v4 client decodes from the error stream."""
    body = {"metadata": {}, "status": "Failure", "message": exc.message,
            "reason": exc.reason, "code": exc.http_status}  # fmt: skip
    return json.dumps(body).encode()
