"""Ports published on the node's own IP: NodePorts (kube-proxy) and hostPorts (CNI portmap).

Both are the same mechanism here, a userspace relay in the style of kube-proxy's "userspace"
mode: the agent listens on ``listen_ip:listen_port`` and relays each client to
``target_ip:target_port``.  The target is routed by the node's kernel into the host TUN, so the
relayed connection goes through the router like pod traffic, and the far end sees the node's
gateway address 10.244.N.1 as the client.

* NodePort: for every (protocol, nodePort) of a NodePort/LoadBalancer service, the node IP is
  relayed to ClusterIP:port; service DNAT and backend choice happen in the router (the SNAT that
  ``externalTrafficPolicy: Cluster`` implies;
  https://kubernetes.io/docs/concepts/services-networking/service/#nodeport).  The relayed
  connection leaves from the node IP, which marks it external for the router: a service's
  ``internalTrafficPolicy: Local`` does not restrict its NodePort (KEP-2086).
* hostPort: for every container port with a ``hostPort``, hostIP:hostPort is relayed to
  podIP:containerPort, which the portmap plugin does with an iptables DNAT
  (https://www.cni.dev/plugins/current/meta/portmap/; the table of who holds which host port is
  ``cni.portmap.PortMapTable``).  Unlike portmap, the pod sees the node's gateway as the client.

``relays`` is the sans-I/O part (the relays; ``plan``: which listeners to open and close);
``PortProxy`` owns the sockets for a set of ``Relay``s and ``NodePortProxy`` maps NodePort rules
onto it.  A service whose endpoints are gone (or a pod that no longer listens) makes the router
answer the inner connect with a RST, so the outer client is reset at once rather than left
hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Iterable
from typing import cast

from knemu.node_agent.kubeproxy.relays import (
    NodePortRule,
    ProxyStatistics,
    Relay,
    plan,
)

log = logging.getLogger(__name__)

UDP_IDLE_S = 30.0  # forget a UDP client after this long without traffic
CONNECT_TIMEOUT_S = 10.0
MAX_UDP_SESSIONS = 4096


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
    """One published UDP port: a connected upstream socket per client address."""

    def __init__(self, relay: Relay, stats: ProxyStatistics, source: str | None = None) -> None:
        self.relay = relay
        self._stats = stats
        self._source = None if source is None else (source, 0)
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
                lambda: reply,
                remote_addr=(self.relay.target_ip, self.relay.target_port),
                local_addr=self._source,
            )
        except OSError as exc:
            self._stats.connect_failures += 1
            log.info("%s: cannot reach the target: %s", self.relay, exc)
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


class PortProxy:
    """Listeners for every ``Relay`` given to ``apply``; ``kind`` names them in logs."""

    def __init__(self, kind: str, from_listen_ip: bool = False) -> None:
        self.kind = kind  # "nodePort" | "hostPort"
        self._from_listen_ip = from_listen_ip  # upstream connections leave from listen_ip
        self.stats = ProxyStatistics()
        self._tcp: dict[Relay, asyncio.Server] = {}
        self._udp: dict[Relay, _UdpListener] = {}
        self._conns: set[asyncio.Task[None]] = set()

    @property
    def relays(self) -> set[Relay]:
        return set(self._tcp) | set(self._udp)

    async def apply(self, desired: Iterable[Relay]) -> dict[Relay, str]:
        """Open and close listeners until they match ``desired``; returns the relays that
        could not be opened (why, per relay).  They are tried again on the next ``apply``."""
        failed: dict[Relay, str] = {}
        to_close, to_open = plan(self.relays, desired)
        for relay in to_close:
            self._close_relay(relay)
        for relay in to_open:
            try:
                await self._open_relay(relay)
            except OSError as exc:
                # Another process holds the port (a real kube-proxy reports the same:
                # "can't open port"); keep serving the other ports.
                failed[relay] = str(exc)
                self.stats.bind_failures += 1
                self.stats.bind_errors[(relay.protocol, relay.listen_port)] = str(exc)
                log.warning("%s %s/%d: cannot listen on %s (%s); free the port or pick another",
                            self.kind, relay.protocol, relay.listen_port, relay.listen_ip,
                            exc)  # fmt: skip
        return failed

    async def _open_relay(self, relay: Relay) -> None:
        if relay.protocol == "UDP":
            loop = asyncio.get_running_loop()
            source = relay.listen_ip if self._from_listen_ip else None
            listener = _UdpListener(relay, self.stats, source)
            await loop.create_datagram_endpoint(
                lambda: listener, local_addr=(relay.listen_ip, relay.listen_port)
            )
            self._udp[relay] = listener
        elif relay.protocol == "TCP":
            server = await asyncio.start_server(
                lambda r, w: self._relay_tcp(relay, r, w),
                relay.listen_ip,
                relay.listen_port,
                reuse_address=True,
            )
            self._tcp[relay] = server
        else:
            log.warning("%s %d: protocol %s is not relayed (only TCP and UDP are)",
                        self.kind, relay.listen_port, relay.protocol)  # fmt: skip
        self.stats.bind_errors.pop((relay.protocol, relay.listen_port), None)

    def _close_relay(self, relay: Relay) -> None:
        server = self._tcp.pop(relay, None)
        if server is not None:
            server.close()
        listener = self._udp.pop(relay, None)
        if listener is not None:
            listener.close()

    async def _relay_tcp(
        self, relay: Relay, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        self.stats.connections += 1
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(
                    relay.target_ip,
                    relay.target_port,
                    local_addr=(relay.listen_ip, 0) if self._from_listen_ip else None,
                ),
                CONNECT_TIMEOUT_S,
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
        for relay in list(self.relays):
            self._close_relay(relay)
        for task in list(self._conns):
            task.cancel()
        for task in list(self._conns):
            with contextlib.suppress(BaseException):
                await task


class NodePortProxy:
    """kube-proxy's NodePort listeners: every NodePortRule on ``listen_ip`` (the node IP)."""

    def __init__(self, listen_ip: str) -> None:
        self.listen_ip = listen_ip
        self._proxy = PortProxy("nodePort", from_listen_ip=True)

    @property
    def stats(self) -> ProxyStatistics:
        return self._proxy.stats

    async def apply(self, desired: Iterable[NodePortRule]) -> None:
        await self._proxy.apply(rule.relay(self.listen_ip) for rule in desired)

    async def close(self) -> None:
        await self._proxy.close()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0) so a refused backend is refused for the client too."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
