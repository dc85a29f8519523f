"""``GET /attach/{ns}/{pod}/{container}``: the kubelet's attach, as a websocket.

It speaks the channel protocol of ``/exec`` (``v4.channel.k8s.io``: channel 0 stdin, 1 stdout,
2 stderr, 3 status; [255, 0] closes stdin) but joins the container's running process instead
of starting one (rules in ``attach``).  One session: the log file is sent from the attach
offset as it grows (polled every ATTACH_POLL_S, as ``tail -f`` does), client stdin goes to the
pipe the agent holds; when the process exits, the last bytes and the channel-3 exit status
are sent and the socket is closed.  A client that goes away ends only its own session.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Protocol

from aiohttp import WSMsgType, web

from knemu.errors import KnemuError
from knemu.node_agent.kubelet.responses import (
    CLOSE,
    EXEC_PROTOCOLS,
    STATUS,
    STDIN,
    error_response,
    exit_status,
)
from knemu.node_agent.runtime.attach_rules import AttachOptions, check_attach
from knemu.node_agent.runtime.containers import ContainerCore, exit_code
from knemu.node_agent.runtime.stdin import ContainerStdin
from knemu.proto import knemu_pb2 as pb

ATTACH_POLL_S = 0.05  # how often a session looks for new output in the log file
_CHUNK = 65536


class AttachTarget(Protocol):
    """What attach needs of a container (``containers.Runner``)."""

    spec: pb.Container
    core: ContainerCore
    process: asyncio.subprocess.Process | None
    stdin: ContainerStdin | None
    log_path: Path
    log_start: int


class RunnerSource(Protocol):
    def runner(self, key: str, container: str) -> AttachTarget: ...


async def serve_attach(request: web.Request, runtime: RunnerSource) -> web.StreamResponse:
    m = request.match_info
    key = f"{m['ns']}/{m['pod']}"
    try:
        options = AttachOptions.from_query(request.query)
        target = runtime.runner(key, m["container"])
        proc, state = target.process, target.core.state
        if proc is None or proc.returncode is not None:
            state = "terminated" if state == "running" else state  # exited, not yet reported
        check_attach(options, key, target.spec.name, target.spec.stdin, state)
    except KnemuError as exc:
        return error_response(exc)
    assert proc is not None  # check_attach refused anything but a running process
    offset = target.log_start if options.from_start else _size(target.log_path)
    ws = web.WebSocketResponse(protocols=EXEC_PROTOCOLS, max_msg_size=0)
    await ws.prepare(request)
    stdin = target.stdin if options.stdin else None
    reader = asyncio.create_task(_feed(ws, stdin), name=f"attach {key} stdin")
    exited = asyncio.create_task(proc.wait(), name=f"attach {key} exit")
    try:
        await _stream(ws, target.log_path, offset, options.output_channel, reader, exited)
    except ConnectionError:
        pass  # the client went away mid-write: its session is over, the container is not
    finally:
        for task in (reader, exited):
            task.cancel()
        await asyncio.gather(reader, exited, return_exceptions=True)
        await ws.close()
    return ws


async def _stream(
    ws: web.WebSocketResponse,
    path: Path,
    offset: int,
    channel: int | None,
    reader: asyncio.Task[None],
    exited: asyncio.Task[int],
) -> None:
    """Send output until the process exits (then the status) or the client leaves."""
    while not (exited.done() or reader.done()):
        offset = await _send_log(ws, path, offset, channel)
        await asyncio.wait({reader, exited}, timeout=ATTACH_POLL_S)  # tail -f, or an end
    if exited.done():
        await _send_log(ws, path, offset, channel)  # the process is gone: its output is all in
        await ws.send_bytes(bytes([STATUS]) + exit_status(exit_code(exited.result())))


async def _feed(ws: web.WebSocketResponse, stdin: ContainerStdin | None) -> None:
    """Channel 0 to the container's stdin until the client closes it or goes away."""
    attached = stdin is not None
    try:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY or not msg.data or stdin is None or not attached:
                continue
            data: bytes = msg.data
            if data[0] == STDIN:
                await stdin.write(data[1:])
            elif data[0] == CLOSE and data[1:2] == bytes([STDIN]):
                attached = False
                stdin.session_stdin_ended()
    finally:
        if stdin is not None and attached:
            stdin.session_stdin_ended()


async def _send_log(ws: web.WebSocketResponse, path: Path, offset: int, channel: int | None) -> int:
    """Send what the log file holds beyond ``offset``; the new offset."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            while chunk := f.read(_CHUNK):
                offset += len(chunk)
                if channel is not None:
                    await ws.send_bytes(bytes([channel]) + chunk)
    except FileNotFoundError:
        pass  # the pod was removed: the exit status follows
    return offset


def _size(path: Path) -> int:
    with contextlib.suppress(FileNotFoundError):
        return path.stat().st_size
    return 0
