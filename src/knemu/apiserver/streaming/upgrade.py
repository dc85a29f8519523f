"""Taking an HTTP request over for SPDY/3.1: the plain upgrade and the websocket tunnel.

* ``Upgrade: SPDY/3.1`` (client-go ``spdy.SpdyRoundTripper``): the client offers protocols in
  ``X-Stream-Protocol-Version`` headers; the server answers ``101 Switching Protocols`` naming
  the one it chose (``httpstream.Handshake``) and the socket carries SPDY from then on.
* Websocket subprotocol ``SPDY/3.1+portforward.k8s.io`` (kubectl >= 1.31 port-forward,
  KEP-4006): every binary message carries SPDY bytes, split anywhere.

Both run a ``SpdyConnection`` and a handler coroutine over it until the handler returns or
the client goes away.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.http_writer import StreamWriter

from knemu.apiserver.streaming.spdy_connection import SpdyConnection
from knemu.errors import KnemuError
from knemu.tasks import until_first_done

SPDY_UPGRADE = "SPDY/3.1"
SPDY_TUNNEL = "SPDY/3.1+portforward.k8s.io"
PROTOCOL_HEADER = "X-Stream-Protocol-Version"
_READ_QUEUE = 64  # socket reads buffered before the socket is paused

Handler = Callable[[SpdyConnection], Coroutine[Any, Any, None]]


def wants_spdy(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == SPDY_UPGRADE.lower()


class ProtocolRefused(KnemuError):
    http_status = 403
    reason = "Forbidden"


def negotiate(request: web.Request, protocol: str) -> None:
    """The client must offer ``protocol``; httpstream.Handshake answers 403 otherwise."""
    offered = offered_protocols(request)
    if protocol not in offered:
        raise ProtocolRefused(
            f"unable to upgrade: unable to negotiate protocol: client supports {offered}, "
            f"server supports [{protocol}]"
        )


def offered_protocols(request: web.Request) -> list[str]:
    """The stream protocols a SPDY client offers, in its order (one header each, or commas)."""
    values = request.headers.getall(PROTOCOL_HEADER, [])
    return [p.strip() for value in values for p in value.split(",") if p.strip()]


class _SocketReader:
    """Stands in for aiohttp's payload parser once the socket carries SPDY: it queues what
    arrives and pauses the socket while the queue is full."""

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol
        self.chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._paused = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.chunks.put_nowait(data)
        if self.chunks.qsize() >= _READ_QUEUE and not self._paused:
            self._paused = True
            self._protocol.pause_reading()
        return False, b""

    def feed_eof(self) -> None:
        self.chunks.put_nowait(None)

    async def read(self) -> bytes | None:
        chunk = await self.chunks.get()
        if self._paused and self.chunks.qsize() < _READ_QUEUE // 2:
            self._paused = False
            self._protocol.resume_reading()
        return chunk


async def serve_upgrade(
    request: web.Request, protocol: str, handler: Handler
) -> web.StreamResponse:
    """Answer 101 for ``protocol`` and run ``handler`` over the socket's SPDY connection."""
    response = web.StreamResponse(status=101, reason="Switching Protocols")
    response.headers.update({"Connection": "Upgrade", "Upgrade": SPDY_UPGRADE,
                             PROTOCOL_HEADER: protocol})  # fmt: skip
    response.force_close()
    reader = _SocketReader(request.protocol)
    # Before the 101 goes out, so no SPDY byte can reach aiohttp's HTTP parser.
    request.protocol.set_parser(reader)  # type: ignore[arg-type]
    await response.prepare(request)
    writer = StreamWriter(request.protocol, asyncio.get_running_loop())
    connection = SpdyConnection(writer.write)

    async def pump() -> None:
        while (chunk := await reader.read()) is not None:
            await connection.feed(chunk)
        connection.feed_eof()

    try:
        await until_first_done(("spdy-read", pump()), ("spdy-handler", handler(connection)))
    finally:
        await connection.close()
        if request.transport is not None:
            request.transport.close()
    return response


async def serve_tunnel(ws: web.WebSocketResponse, handler: Handler) -> None:
    """Run ``handler`` over the SPDY connection carried by an accepted websocket."""
    connection = SpdyConnection(ws.send_bytes)

    async def pump() -> None:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                await connection.feed(msg.data)
            elif msg.type != WSMsgType.TEXT:
                break
        connection.feed_eof()

    try:
        await until_first_done(("spdy-ws-read", pump()), ("spdy-ws-handler", handler(connection)))
    finally:
        await connection.close()
        await ws.close()
