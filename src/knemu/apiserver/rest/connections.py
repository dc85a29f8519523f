"""Connection limits of the REST listener: every connection is treated as possibly hostile.

aiohttp bounds a request's header lines (8190 bytes, 128 headers) and, with
``IDLE_TIMEOUT_S`` passed as its keep-alive timeout, closes idle keep-alive connections; it
has no limit on how many connections are open nor on how long a client may take to send its
request headers (slowloris).  ``GuardedTCPSite`` is aiohttp's ``TCPSite`` with a thin
protocol wrapper in front of each connection that adds both:

* at most ``ConnectionLimits.max_connections`` open connections in all and
  ``max_per_client`` from one client address; one more is answered ``503`` with a Status
  body and closed at once, so a flood costs an accept and a close, never a held descriptor;
* the first request's header block must be complete (``CRLF CRLF`` seen) within
  ``header_timeout_s`` of the connect, or the connection is closed.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = 2048
    max_per_client: int = 512
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 60.0  # aiohttp's keepalive_timeout (its default is an hour)


def _refusal(message: str) -> bytes:
    body = json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "ServiceUnavailable",
            "code": 503,
        }
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class ConnectionGuard:
    """Counts open connections in all and per client address."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.open = 0
        self.per_client: Counter[str] = Counter()
        self.refused = 0
        self.header_timeouts = 0

    def admit(self, client: str) -> str:
        """ "" if the connection may proceed, else why not."""
        if self.open >= self.limits.max_connections:
            return f"too many connections ({self.limits.max_connections}); retry later"
        if self.per_client[client] >= self.limits.max_per_client:
            return (
                f"too many connections from {client} ({self.limits.max_per_client}); close "
                "some and retry"
            )
        self.open += 1
        self.per_client[client] += 1
        return ""

    def release(self, client: str) -> None:
        self.open -= 1
        self.per_client[client] -= 1
        if self.per_client[client] <= 0:
            del self.per_client[client]

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _GuardedProtocol(self, inner())

    def statistics(self) -> dict[str, int]:
        return {
            "open": self.open,
            "refused": self.refused,
            "header_timeouts": self.header_timeouts,
        }


class _GuardedProtocol(asyncio.Protocol):
    """Forwards everything to aiohttp's protocol; adds the admission and header timeout."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self._client: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        refusal = self._guard.admit(client)
        if refusal:
            self._guard.refused += 1
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(_refusal(refusal))
            transport.close()
            return
        self._client, self._transport = client, transport
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._guard.limits.header_timeout_s, self._too_slow)
        self._inner.connection_made(transport)

    def _too_slow(self) -> None:
        self._guard.header_timeouts += 1
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        if self._client is None:
            return
        if self._timer is not None:
            if b"\r\n\r\n" in self._tail + data:
                self._timer.cancel()
                self._timer = None
            else:
                self._tail = data[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._client is not None else None

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._client is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._guard.release(self._client)
        self._client = None
        self._inner.connection_lost(exc)


class GuardedTCPSite(web.TCPSite):
    """``web.TCPSite`` whose connections pass through a ``ConnectionGuard``."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        guard: ConnectionGuard,
        ssl_context: ssl.SSLContext | None = None,
    ):
        super().__init__(runner, host, port, ssl_context=ssl_context)
        self.guard = guard

    async def start(self) -> None:
        self._runner._reg_site(self)
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.guard.factory(server),
            self._host,
            self._port,
            ssl=self._ssl_context,
            ssl_handshake_timeout=self.guard.limits.header_timeout_s if self._ssl_context else None,
            backlog=self._backlog,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1]
