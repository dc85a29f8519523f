"""`knemu dns`: thin asyncio adapters around the answer core.

* UDP: one datagram endpoint; each datagram is answered synchronously in
  ``datagram_received`` (no queue: the kernel socket buffer is the only backlog).
* TCP (RFC 7766): length-prefixed messages, answered in order per connection; at most
  ``MAX_TCP_CONNECTIONS`` connections, each with an idle timeout and at most one 64 KiB message
  buffered, so a flood cannot grow memory.
* Upstream: names outside the zone go to ``config.upstream`` over UDP, retried over TCP when
  the reply is truncated; at most ``MAX_FORWARDS`` are in flight from UDP clients.
* Metrics: Prometheus text on ``config.metrics_listen`` at ``/metrics`` (CoreDNS's names),
  plus ``/health`` and ``/ready`` (200 once the watch has synced) like CoreDNS's plugins.
* The view is fed by ``knemu.proto.client.Informer`` over Service, EndpointSlice and Pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from typing import Any, cast

import dns.asyncquery
import dns.message
from aiohttp import web

from knemu.config import DnsConfig
from knemu.dns.answer import Answerer, Drop, Forward, Reply
from knemu.dns.metrics import DnsMetrics
from knemu.dns.view import KINDS, ClusterView
from knemu.errors import KnemuError
from knemu.proto.client import ClusterClient, Informer

log = logging.getLogger("knemu.dns")

MAX_TCP_CONNECTIONS = 256
TCP_IDLE_S = 10.0  # CoreDNS's read timeout for TCP
MAX_FORWARDS = 256
UPSTREAM_TIMEOUT_S = 2.0


def split_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def _family(addr: Any) -> int:
    """CoreDNS's `family` label: 1 for IPv4 clients, 2 for IPv6."""
    return 2 if ":" in str(addr[0]) else 1


class _Upstream:
    """Exchanges one query with the upstream resolver (dnspython's asyncio backend)."""

    def __init__(self, target: str, timeout_s: float) -> None:
        self.host, self.port = split_hostport(target)
        self.timeout_s = timeout_s

    async def exchange(self, query: dns.message.Message) -> dns.message.Message | None:
        try:
            response, _tcp = await dns.asyncquery.udp_with_fallback(
                query, self.host, timeout=self.timeout_s, port=self.port
            )
            return response
        except Exception as exc:  # timeouts, refused connections, garbage: SERVFAIL
            log.debug("upstream %s:%d failed: %r", self.host, self.port, exc)
            return None


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        started = time.perf_counter()
        outcome = self.server.answerer.handle(data, "udp", _family(addr))
        if isinstance(outcome, Reply):
            self.send(outcome, addr, started)
        elif isinstance(outcome, Forward):
            self.server.forward_udp(self, outcome, addr, started)

    def send(self, reply: Reply, addr: Any, started: float) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply.wire, addr)
        self.server.metrics.observe_duration(time.perf_counter() - started)


class DnsServer:
    """The running DNS component; ``async with DnsServer(config) as server:``.

    ``watch=False`` leaves the view to the caller (tests feed ``server.view`` directly).
    Port 0 in ``config.listen`` picks a free port shared by UDP and TCP.
    """

    def __init__(
        self,
        config: DnsConfig,
        *,
        watch: bool = True,
        max_tcp_connections: int = MAX_TCP_CONNECTIONS,
        tcp_idle_s: float = TCP_IDLE_S,
        max_forwards: int = MAX_FORWARDS,
        upstream_timeout_s: float = UPSTREAM_TIMEOUT_S,
    ) -> None:
        self.config = config
        self.max_tcp_connections = max_tcp_connections
        self.tcp_idle_s = tcp_idle_s
        self.max_forwards = max_forwards
        self.view = ClusterView()
        self.metrics = DnsMetrics(f"dns://{config.listen}")
        self.answerer = Answerer(self.view, config, self.metrics)
        self.udp_address: tuple[str, int] = ("", 0)
        self.metrics_address: tuple[str, int] = ("", 0)
        self._watch = watch
        self._upstream = _Upstream(config.upstream, upstream_timeout_s) if config.upstream else None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._runner: web.AppRunner | None = None
        self._informer: Informer | None = None
        self._client: ClusterClient | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._tcp_writers: set[asyncio.StreamWriter] = set()
        self._forwards = 0
        self._synced = asyncio.Event()

    # ---- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> DnsServer:
        try:
            await self._bind_dns()
            await self._start_metrics()
            if self._watch:
                self._start_informer()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            for writer in list(self._tcp_writers):  # open connections end now, not at idle
                writer.close()
            await self._tcp.wait_closed()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()
        self._udp = self._tcp = self._runner = self._client = None

    def statistics(self) -> dict[str, int]:
        """Live counts a test or an operator can check: view size, open work."""
        return {
            **self.view.statistics(),
            "tasks": sum(1 for t in self._tasks if t.get_name() != "dns-informer"),
            "forwards_in_flight": self._forwards,
            "tcp_connections": self.metrics.tcp_connections,
            "answer_cache_entries": self.answerer.cache_statistics()["entries"],
        }

    async def wait_synced(self) -> None:
        """Return once the view holds the api-server's first snapshot."""
        await self._synced.wait()

    async def _bind_dns(self) -> None:
        host, port = split_hostport(self.config.listen)
        loop = asyncio.get_running_loop()
        for _attempt in range(20):  # port 0: UDP picks, TCP must get the same number
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(host, port)
            )
            self._udp = transport
            self.udp_address = transport.get_extra_info("sockname")[:2]
            self.metrics.server = f"dns://{host}:{self.udp_address[1]}"  # CoreDNS's label
            try:
                self._tcp = await asyncio.start_server(
                    self._serve_tcp, host, self.udp_address[1], limit=1 << 16
                )
                return
            except OSError:
                transport.close()
                self._udp = None
                if port != 0:
                    raise
        raise OSError(f"dns: no port free for both UDP and TCP on {host}; set --listen")

    async def _start_metrics(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics_page)
        app.router.add_get("/health", self._health_page)
        app.router.add_get("/ready", self._ready_page)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        host, port = split_hostport(self.config.metrics_listen)
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.metrics_address = sockets[0].getsockname()[:2] if sockets else (host, port)

    def _start_informer(self) -> None:
        self._client = ClusterClient(self.config.apiserver)
        self._informer = Informer(self._client, KINDS, "dns", self._on_event, self._on_synced)
        self._spawn(self._informer.run(), "dns-informer")

    def _on_event(self, type: str, kind: str, obj: Any, _old: Any) -> None:
        self.view.apply(type, kind, obj)

    def _on_synced(self) -> None:
        rv = self._informer.last_rv if self._informer is not None else 0
        self.view.mark_synced(rv)
        self._synced.set()

    def mark_synced(self) -> None:
        """For ``watch=False``: declare the hand-fed view complete."""
        self.view.mark_synced()
        self._synced.set()

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- UDP forwarding -----------------------------------------------------------------

    def forward_udp(self, proto: _UdpProtocol, forward: Forward, addr: Any, started: float) -> None:
        if self._forwards >= self.max_forwards:
            self.metrics.count_drop("forward-overload")
            return
        self._forwards += 1
        self._spawn(self._forward_udp(proto, forward, addr, started), "dns-forward")

    async def _forward_udp(
        self, proto: _UdpProtocol, forward: Forward, addr: Any, started: float
    ) -> None:
        try:
            proto.send(await self._relay(forward), addr, started)
        finally:
            self._forwards -= 1

    async def _relay(self, forward: Forward) -> Reply:
        assert self._upstream is not None
        return self.answerer.relay(forward, await self._upstream.exchange(forward.query))

    # ---- TCP ----------------------------------------------------------------------------

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.metrics.tcp_connections >= self.max_tcp_connections:
            self.metrics.count_drop("tcp-connection-limit")
            writer.close()
            return
        self.metrics.tcp_connections += 1
        self._tcp_writers.add(writer)
        family = _family(writer.get_extra_info("peername") or ("",))
        try:
            while True:
                data = await self._read_message(reader)
                if data is None:
                    return
                started = time.perf_counter()
                outcome = self.answerer.handle(data, "tcp", family)
                if isinstance(outcome, Drop):
                    continue
                reply = outcome if isinstance(outcome, Reply) else await self._relay(outcome)
                writer.write(len(reply.wire).to_bytes(2, "big") + reply.wire)
                # A client that stops reading must not hold its slot forever (RFC 7766 6.2.3).
                await asyncio.wait_for(writer.drain(), self.tcp_idle_s)
                self.metrics.observe_duration(time.perf_counter() - started)
        except (ConnectionError, OSError, TimeoutError):
            return
        finally:
            self.metrics.tcp_connections -= 1
            self._tcp_writers.discard(writer)
            writer.close()

    async def _read_message(self, reader: asyncio.StreamReader) -> bytes | None:
        """One length-prefixed message (RFC 1035 4.2.2), or None to close the connection."""
        try:
            prefix = await asyncio.wait_for(reader.readexactly(2), self.tcp_idle_s)
        except (asyncio.IncompleteReadError, TimeoutError):
            return None  # the client closed or went idle: end quietly
        length = int.from_bytes(prefix, "big")
        if length == 0:
            self.metrics.count_drop("tcp-bad-length")
            return None
        try:
            return await asyncio.wait_for(reader.readexactly(length), self.tcp_idle_s)
        except asyncio.IncompleteReadError:
            return None
        except TimeoutError:
            self.metrics.count_drop("tcp-timeout")
            return None

    # ---- HTTP ---------------------------------------------------------------------------

    async def _metrics_page(self, _request: web.Request) -> web.Response:
        return web.Response(
            text=self.metrics.render(), content_type="text/plain", charset="utf-8",
            headers={"X-Content-Type-Options": "nosniff"},
        )  # fmt: skip

    async def _health_page(self, _request: web.Request) -> web.Response:
        return _text("OK")

    async def _ready_page(self, _request: web.Request) -> web.Response:
        if self.view.synced:
            return _text("OK")
        return _text("not synced with the api-server yet", status=503)


def _text(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body + "\n", status=status)


async def serve(config: DnsConfig, *, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or the task is cancelled)."""
    stop = stop if stop is not None else asyncio.Event()
    async with DnsServer(config) as server:
        host, port = server.udp_address
        log.info(
            "knemu dns: zone %s on %s:%d (udp+tcp), metrics http://%s:%d/metrics, api-server %s",
            config.zone, host, port, *server.metrics_address, config.apiserver,
        )  # fmt: skip
        await stop.wait()


def run(config: DnsConfig) -> int:
    """`knemu dns`: serve until SIGTERM/SIGINT; the process exit code."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, stop=stop)

    try:
        asyncio.run(main())
    except KnemuError as exc:
        log.error("knemu dns: %s", exc.message)
        return exc.exit_code
    except OSError as exc:
        log.error(
            "knemu dns: cannot listen on %s / %s: %s; pick free addresses with --listen and "
            "--metrics-listen",
            config.listen, config.metrics_listen, exc,
        )  # fmt: skip
        return 1
    return 0
