"""Userspace NodePort proxy, kube-proxy "userspace" mode style.

For every (protocol, nodePort) of a NodePort/LoadBalancer service the agent listens on the
node's underlay IP and relays each client to ClusterIP:port.  The kernel routes the ClusterIP
(10.96.0.0/12) into the node's host TUN, so the relayed connection goes through the router:
service DNAT, backend choice and encapsulation happen exactly as for pod traffic, and the
backend sees the node's gateway address 10.244.N.1 as the client (the SNAT that
``externalTrafficPolicy: Cluster`` implies; https://kubernetes.io/docs/concepts/services-networking/service/#nodeport).

``plan`` is the sans-I/O part (which listeners to open and close); ``NodePortProxy`` owns the
sockets.  A service whose endpoints are gone makes the router answer the inner connect with a
RST, so the outer client is closed at once rather than left hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

log = logging.getLogger(__name__)

UDP_IDLE_S = 30.0  # forget a UDP client after this long without traffic
CONNECT_TIMEOUT_S = 10.0
MAX_UDP_SESSIONS = 4096


@dataclass(frozen=True, order=True)
class NodePortRule:
    protocol: str  # "TCP" | "UDP"
    node_port: int
    cluster_ip: str
    port: int


@dataclass
class NodePortStatistics:
    connections: int = 0
    connect_failures: int = 0
    datagrams: int = 0
    bind_failures: int = 0
    sessions_evicted: int = 0
    bind_errors: dict[tuple[str, int], str] = field(default_factory=dict)


def plan(
    current: Iterable[NodePortRule], desired: Iterable[NodePortRule]
) -> tuple[list[NodePortRule], list[NodePortRule]]:
    """(to_close, to_open): a changed target closes the old listener before opening anew."""
    cur, want = set(current), set(desired)
    return sorted(cur - want), sorted(want - cur)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy bytes until EOF, then half-close the other side (TCP FIN, as a real proxy does)."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        # A reset on one side: close the other side too rather than leave it hanging.
        writer.close()


class _UdpListener(asyncio.DatagramProtocol):
    """One nodePort/UDP: a connected upstream socket per client address."""

    def __init__(self, rule: NodePortRule, stats: NodePortStatistics) -> None:
        self.rule = rule
        self._stats = stats
        self.transport: asyncio.DatagramTransport | None = None
        self._sessions: dict[tuple[str, int], tuple[asyncio.DatagramTransport, float]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._opening: dict[tuple[str, int], list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast: the selector loop's datagram transport is not a DatagramTransport subclass.
        self.transport = cast(asyncio.DatagramTransport, transport)
        self._schedule_sweep()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._stats.datagrams += 1
        loop = asyncio.get_running_loop()
        session = self._sessions.get(addr)
        if session is not None:
            session[0].sendto(data)
            self._sessions[addr] = (session[0], loop.time())
            return
        queued = self._opening.get(addr)
        if queued is not None:  # the upstream socket is being opened: keep order
            queued.append(data)
            return
        self._opening[addr] = [data]
        task = loop.create_task(self._open_session(addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open_session(self, client: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        if len(self._sessions) >= MAX_UDP_SESSIONS:
            oldest = min(self._sessions, key=lambda a: self._sessions[a][1])
            self._sessions.pop(oldest)[0].close()
            self._stats.sessions_evicted += 1
        reply = _UdpReply(self, client)
        try:
            upstream, _ = await loop.create_datagram_endpoint(
                lambda: reply, remote_addr=(self.rule.cluster_ip, self.rule.port)
            )
        except OSError as exc:
            self._stats.connect_failures += 1
            log.info("nodePort %d/UDP: cannot reach %s: %s", self.rule.node_port, self.rule, exc)
            self._opening.pop(client, None)
            return
        self._sessions[client] = (upstream, loop.time())
        for data in self._opening.pop(client, []):
            upstream.sendto(data)

    def reply(self, data: bytes, client: tuple[str, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(data, client)

    def _schedule_sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(UDP_IDLE_S / 2, self._sweep)

    def _sweep(self) -> None:
        cutoff = asyncio.get_running_loop().time() - UDP_IDLE_S
        for client, (upstream, last) in list(self._sessions.items()):
            if last < cutoff:
                upstream.close()
                del self._sessions[client]
        self._schedule_sweep()

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in self._tasks:
            task.cancel()
        for upstream, _ in self._sessions.values():
            upstream.close()
        self._sessions.clear()
        if self.transport is not None:
            self.transport.close()


class _UdpReply(asyncio.DatagramProtocol):
    def __init__(self, listener: _UdpListener, client: tuple[str, int]) -> None:
        self._listener = listener
        self._client = client

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._listener.reply(data, self._client)


class NodePortProxy:
    """Listeners on ``listen_ip`` for every NodePortRule given to ``apply``."""

    def __init__(self, listen_ip: str) -> None:
        self.listen_ip = listen_ip
        self.stats = NodePortStatistics()
        self._tcp: dict[NodePortRule, asyncio.Server] = {}
        self._udp: dict[NodePortRule, _UdpListener] = {}
        self._conns: set[asyncio.Task[None]] = set()

    @property
    def rules(self) -> set[NodePortRule]:
        return set(self._tcp) | set(self._udp)

    async def apply(self, desired: Iterable[NodePortRule]) -> None:
        to_close, to_open = plan(self.rules, desired)
        for rule in to_close:
            self._close_rule(rule)
        for rule in to_open:
            try:
                await self._open_rule(rule)
            except OSError as exc:
                # Another process holds the port (a real kube-proxy reports the same:
                # "can't open port"); keep serving the other ports.
                self.stats.bind_failures += 1
                self.stats.bind_errors[(rule.protocol, rule.node_port)] = str(exc)
                log.warning(
                    "nodePort %s/%d: cannot listen on %s (%s); free the port or pick another",
                    rule.protocol,
                    rule.node_port,
                    self.listen_ip,
                    exc,
                )

    async def _open_rule(self, rule: NodePortRule) -> None:
        if rule.protocol == "UDP":
            loop = asyncio.get_running_loop()
            listener = _UdpListener(rule, self.stats)
            await loop.create_datagram_endpoint(
                lambda: listener, local_addr=(self.listen_ip, rule.node_port)
            )
            self._udp[rule] = listener
        elif rule.protocol == "TCP":
            server = await asyncio.start_server(
                lambda r, w: self._relay_tcp(rule, r, w),
                self.listen_ip,
                rule.node_port,
                reuse_address=True,
            )
            self._tcp[rule] = server
        else:
            log.warning("nodePort %d: protocol %s is not proxied", rule.node_port, rule.protocol)
        self.stats.bind_errors.pop((rule.protocol, rule.node_port), None)

    def _close_rule(self, rule: NodePortRule) -> None:
        server = self._tcp.pop(rule, None)
        if server is not None:
            server.close()
        listener = self._udp.pop(rule, None)
        if listener is not None:
            listener.close()

    async def _relay_tcp(
        self, rule: NodePortRule, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        self.stats.connections += 1
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(rule.cluster_ip, rule.port), CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError):
            self.stats.connect_failures += 1
            _abort(writer)
            if task is not None:
                self._conns.discard(task)
            return
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            writer.close()
            up_writer.close()
            if task is not None:
                self._conns.discard(task)

    async def close(self) -> None:
        for rule in list(self.rules):
            self._close_rule(rule)
        for task in list(self._conns):
            task.cancel()
        for task in list(self._conns):
            with contextlib.suppress(BaseException):
                await task


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0) so a refused backend is refused for the client too."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
