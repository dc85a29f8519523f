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

With TLS the admission comes before the handshake (``_TlsAdmission``, then
``loop.start_tls``), so a flood of connections costs no handshakes either; a handshake that
does not finish within ``header_timeout_s`` is dropped and counted.
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
        self.handshake_failures = 0
        self._upgrades: set[asyncio.Task[None]] = set()

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

    def factory(
        self, inner: Callable[[], asyncio.Protocol], tls: ssl.SSLContext | None = None
    ) -> Callable[[], asyncio.Protocol]:
        if tls is not None:
            return lambda: _TlsAdmission(self, inner, tls)
        return lambda: _GuardedProtocol(self, inner())

    def statistics(self) -> dict[str, int]:
        return {
            "open": self.open,
            "refused": self.refused,
            "header_timeouts": self.header_timeouts,
            "handshake_failures": self.handshake_failures,
        }


def _client_of(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "?"


class _TlsAdmission(asyncio.Protocol):
    """Admits a raw TCP connection, then upgrades it to TLS (``loop.start_tls``) and hands
    the TLS transport to a ``_GuardedProtocol``, which owns the connection's count from the
    admission on (and releases it however the connection ends)."""

    def __init__(
        self, guard: ConnectionGuard, inner: Callable[[], asyncio.Protocol], tls: ssl.SSLContext
    ) -> None:
        self._guard, self._inner, self._tls = guard, inner, tls
        self._protocol: _GuardedProtocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        client = _client_of(transport)
        refusal = self._guard.admit(client)
        if refusal:  # before the handshake: a plaintext 503 would mean nothing to a TLS client
            self._guard.refused += 1
            transport.close()
            return
        assert isinstance(transport, asyncio.Transport)
        self._protocol = _GuardedProtocol(self._guard, self._inner(), admitted=client)
        transport.pause_reading()  # the ClientHello waits in the kernel for start_tls
        task = asyncio.get_running_loop().create_task(self._upgrade(transport, self._protocol))
        self._guard._upgrades.add(task)
        task.add_done_callback(self._guard._upgrades.discard)

    async def _upgrade(self, transport: asyncio.Transport, protocol: _GuardedProtocol) -> None:
        try:
            tls = await asyncio.get_running_loop().start_tls(
                transport,
                protocol,
                self._tls,
                server_side=True,
                ssl_handshake_timeout=self._guard.limits.header_timeout_s,
            )
        except (OSError, ssl.SSLError, TimeoutError, asyncio.CancelledError):
            tls = None
        if tls is None:
            self._guard.handshake_failures += 1
            protocol.connection_lost(None)
            transport.close()
            return
        protocol.connection_made(tls)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._protocol is not None:  # lost before start_tls took the transport over
            self._protocol.connection_lost(exc)


class _GuardedProtocol(asyncio.Protocol):
    """Forwards everything to aiohttp's protocol; adds the admission and header timeout."""

    def __init__(
        self, guard: ConnectionGuard, inner: asyncio.Protocol, admitted: str | None = None
    ) -> None:
        self._guard = guard
        self._inner = inner
        # Counted already (by _TlsAdmission, before the handshake): data that arrives before
        # connection_made (the TLS layer may deliver it first) is held until then.
        self._admitted = admitted
        self._client: str | None = admitted
        self._early: list[bytes] | None = [] if admitted else None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._admitted and self._client is None:
            return  # lost during the handshake; already released
        client = self._admitted or _client_of(transport)
        refusal = "" if self._admitted else self._guard.admit(client)
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
        early, self._early = self._early, None
        for data in early or ():
            self.data_received(data)

    def _too_slow(self) -> None:
        self._guard.header_timeouts += 1
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        if self._client is None:
            return
        if self._early is not None:
            self._early.append(data)
            return
        if self._timer is not None:
            if b"\r\n\r\n" in self._tail + data:
                self._timer.cancel()
                self._timer = None
            else:
                self._tail = data[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._client is None or self._early is not None:
            return None
        return self._inner.eof_received()

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
        if self._early is None:  # the inner protocol saw connection_made
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
            self.guard.factory(server, self._ssl_context),
            self._host,
            self._port,
            backlog=self._backlog,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        await super().stop()
        upgrades = list(self.guard._upgrades)  # handshakes under way: end them with the site
        for task in upgrades:
            task.cancel()
        await asyncio.gather(*upgrades, return_exceptions=True)
