"""``GET /portForward/{ns}/{pod}?port=P``: the kubelet's port-forward, as a websocket.

Framing in ``knemu.portforward_frames`` (the kubelet's websocket protocol).  For each port the
agent opens a TCP connection from its own network namespace to the pod's IP (the node's IP for
a hostNetwork pod), which it reaches over the host routes to the pod's TUN, and copies bytes
both ways.  A port that cannot be reached gets the reason on its error channel, worded as
kubelet words it.  The websocket closes when every pod connection has ended or the client
goes away; nothing outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Protocol

from aiohttp import WSMsgType, web

from knemu.errors import KnemuError, NotFound
from knemu.node_agent.kubelet.responses import error_response
from knemu.portforward_frames import (
    CHUNK,
    MAX_MESSAGE,
    PORTFORWARD_PROTOCOLS,
    data_channel,
    error_channel,
    frame,
    parse_client_message,
    parse_ports,
    port_prefix,
)
from knemu.tasks import until_first_done

DIAL_TIMEOUT_S = 5.0

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class PodAddress(Protocol):
    """What port-forward needs of a pod (``pods.PodHandle``)."""

    ip: str
    uid: str


async def serve_portforward(
    request: web.Request, handles: Mapping[str, PodAddress], node: str
) -> web.StreamResponse:
    m = request.match_info
    key = f"{m['ns']}/{m['pod']}"
    try:
        ports = parse_ports(request.query.getall("port", []) + request.query.getall("ports", []))
        handle = handles.get(key)
        if handle is None:
            raise NotFound(f"pod {key} does not run on node {node}; send it to the pod's node")
    except KnemuError as exc:
        return error_response(exc)
    ws = web.WebSocketResponse(protocols=PORTFORWARD_PROTOCOLS, max_msg_size=MAX_MESSAGE)
    await ws.prepare(request)
    for i, port in enumerate(ports):
        await ws.send_bytes(frame(data_channel(i), port_prefix(port)))
        await ws.send_bytes(frame(error_channel(i), port_prefix(port)))
    dialed = await asyncio.gather(*(_dial(handle.ip, p) for p in ports))
    streams: dict[int, Streams] = {}
    for i, (port, result) in enumerate(zip(ports, dialed, strict=True)):
        if isinstance(result, str):
            why = f"error forwarding port {port} to pod {key}, uid {handle.uid}: {result}"
            await ws.send_bytes(frame(error_channel(i), why.encode()))
        else:
            streams[i] = result
    try:
        await _pump(ws, streams)
    finally:
        for _, writer in streams.values():
            writer.close()
        await ws.close()
    return ws


async def _dial(ip: str, port: int) -> Streams | str:
    """The pod connection, or why there is none (in the words of Go's net.Dial)."""
    try:
        return await asyncio.wait_for(asyncio.open_connection(ip, port), DIAL_TIMEOUT_S)
    except TimeoutError:
        return f"dial tcp {ip}:{port}: i/o timeout after {DIAL_TIMEOUT_S:g}s"
    except ConnectionRefusedError:
        return f"dial tcp {ip}:{port}: connect: connection refused (nothing listens there)"
    except OSError as exc:
        return f"dial tcp {ip}:{port}: connect: {exc.strerror or exc}"


async def _pump(ws: web.WebSocketResponse, streams: dict[int, Streams]) -> None:
    """Copy until every pod connection has ended or the client has gone."""
    if not streams:
        return
    writers = {i: w for i, (_, w) in streams.items()}
    await until_first_done(
        ("portforward to client", _all_to_client(ws, streams)),
        ("portforward to pods", _to_pods(ws, writers)),
    )


async def _all_to_client(ws: web.WebSocketResponse, streams: dict[int, Streams]) -> None:
    await asyncio.gather(*(_to_client(ws, i, reader) for i, (reader, _) in streams.items()))


async def _to_client(ws: web.WebSocketResponse, index: int, reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError):  # a reset ends this port's stream like an EOF
        while chunk := await reader.read(CHUNK):
            await ws.send_bytes(frame(data_channel(index), chunk))


async def _to_pods(ws: web.WebSocketResponse, writers: dict[int, asyncio.StreamWriter]) -> None:
    """Client data to each pod connection; writes wait for the pod to take them (drain)."""
    async for msg in ws:
        if msg.type != WSMsgType.BINARY:
            continue
        parsed = parse_client_message(msg.data, max(writers) + 1)
        if parsed is None or parsed[1] not in writers:
            continue
        kind, index, payload = parsed
        writer = writers[index]
        with contextlib.suppress(ConnectionError, RuntimeError):  # the pod closed: ignore it
            if kind == "close":
                writer.write_eof()
            elif not writer.is_closing():
                writer.write(payload)
                await writer.drain()
