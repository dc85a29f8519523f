"""Node-local DNS forwarder: 10.244.N.1:53 (UDP and TCP) -> the ``knemu dns`` component.

Pods resolve through kube-dns 10.96.0.10:53, a service whose single backend is this node's
gateway address, so a pod query is DNATed by the router, delivered to the host TUN, and lands on
this listener; the forwarder relays it to ``AgentConfig.dns_upstream``.  This is the shape of
NodeLocal DNSCache (https://kubernetes.io/docs/tasks/administer-cluster/nodelocaldns/), without
the cache.

UDP: one upstream socket for every client.  Message IDs are rewritten so that two clients that
picked the same ID (RFC 1035 section 4.1.1: the ID is chosen by the client) do not receive each
other's answers; ``QueryRelay`` is the sans-I/O table doing that.  TCP (RFC 7766): each client
connection gets its own upstream connection and the bytes are piped unchanged, since the
two-byte length framing is the same on both sides.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import OrderedDict
from dataclasses import dataclass

from knemu.errors import ConfigError
from knemu.node_agent.kubeproxy.nodeport import pipe

log = logging.getLogger(__name__)

DNS_HEADER_BYTES = 12  # RFC 1035 section 4.1.1
QUERY_TIMEOUT_S = 5.0  # a resolver retries after ~5 s (resolv.conf "timeout:5" default)
MAX_PENDING = 4096  # bounded: the oldest pending query is forgotten beyond this


@dataclass
class RelayStatistics:
    queries: int = 0
    answers: int = 0
    malformed: int = 0
    unmatched: int = 0
    expired: int = 0
    evicted: int = 0
    servfail: int = 0


@dataclass(frozen=True)
class _Pending:
    client: tuple[str, int]
    client_id: int
    deadline: float
    query: bytes  # kept to answer SERVFAIL when the upstream is unreachable


class QueryRelay:
    """Sans-I/O ID rewriting table for the UDP forwarder."""

    def __init__(self, max_pending: int = MAX_PENDING, timeout_s: float = QUERY_TIMEOUT_S):
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
        self._next_id = 1
        self._max_pending = max_pending
        self._timeout_s = timeout_s
        self.stats = RelayStatistics()

    def on_query(self, data: bytes, client: tuple[str, int], now: float) -> bytes | None:
        """A client's query -> the datagram to send upstream (None: dropped and counted)."""
        if len(data) < DNS_HEADER_BYTES:
            self.stats.malformed += 1
            return None
        self.expire(now)
        if len(self._pending) >= self._max_pending:
            self._pending.popitem(last=False)
            self.stats.evicted += 1
        upstream_id = self._allocate_id()
        (client_id,) = struct.unpack_from("!H", data)
        self._pending[upstream_id] = _Pending(client, client_id, now + self._timeout_s, data)
        self.stats.queries += 1
        return struct.pack("!H", upstream_id) + data[2:]

    def on_answer(self, data: bytes, now: float) -> tuple[bytes, tuple[str, int]] | None:
        """An upstream answer -> (datagram, client) to send it to, or None when unknown."""
        if len(data) < DNS_HEADER_BYTES:
            self.stats.malformed += 1
            return None
        (upstream_id,) = struct.unpack_from("!H", data)
        pending = self._pending.pop(upstream_id, None)
        if pending is None or pending.deadline < now:
            self.stats.unmatched += 1
            return None
        self.stats.answers += 1
        return struct.pack("!H", pending.client_id) + data[2:], pending.client

    def fail_all(self) -> list[tuple[bytes, tuple[str, int]]]:
        """The upstream is unreachable (ICMP port unreachable): answer every pending query
        SERVFAIL at once rather than let each client wait for its timeout."""
        out = []
        for pending in self._pending.values():
            reply = servfail(pending.query)
            if reply is not None:
                out.append((reply, pending.client))
        self._pending.clear()
        self.stats.servfail += len(out)
        return out

    def expire(self, now: float) -> None:
        """Forget queries whose client has given up (insertion order == deadline order)."""
        while self._pending:
            key, first = next(iter(self._pending.items()))
            if first.deadline >= now:
                return
            del self._pending[key]
            self.stats.expired += 1

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _allocate_id(self) -> int:
        for _ in range(0x10000):
            candidate = self._next_id
            self._next_id = (self._next_id % 0xFFFF) + 1
            if candidate not in self._pending:
                return candidate
        raise AssertionError("unreachable: pending is bounded below 65535")


def servfail(query: bytes) -> bytes | None:
    """A SERVFAIL response (RFC 1035 section 4.1.1, RCODE 2) echoing the query's ID, opcode,
    RD bit and question section; None when the question cannot be delimited."""
    if len(query) < DNS_HEADER_BYTES:
        return None
    qid, flags, qdcount = struct.unpack_from("!HHH", query)
    end = DNS_HEADER_BYTES
    for _ in range(qdcount):
        while True:  # QNAME: length-prefixed labels ending in 0, or a 2-byte pointer
            if end >= len(query):
                return None
            length = query[end]
            if length & 0xC0 == 0xC0:
                end += 2
                break
            end += 1 + length
            if length == 0:
                break
        end += 4  # QTYPE, QCLASS
    if end > len(query):
        return None
    reply_flags = 0x8000 | (flags & 0x7900) | 0x0080 | 2  # QR, opcode+RD, RA, SERVFAIL
    return struct.pack("!HHHHHH", qid, reply_flags, qdcount, 0, 0, 0) + query[12:end]


def parse_hostport(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"{what}: {value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


class _ClientSide(asyncio.DatagramProtocol):
    def __init__(self, forwarder: DnsForwarder) -> None:
        self._forwarder = forwarder

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._forwarder.on_client_datagram(data, addr)


class _UpstreamSide(asyncio.DatagramProtocol):
    def __init__(self, forwarder: DnsForwarder) -> None:
        self._forwarder = forwarder

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._forwarder.on_upstream_datagram(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable: the DNS component is not running (yet).
        log.debug("dns upstream error: %s", exc)
        self._forwarder.on_upstream_unreachable()


class DnsForwarder:
    """UDP and TCP listener on ``listen`` relaying to ``upstream`` (both HOST:PORT)."""

    def __init__(self, listen: str, upstream: str) -> None:
        self._listen = parse_hostport(listen, "dns forwarder listen")
        self._upstream = parse_hostport(upstream, "dns_upstream")
        self.relay = QueryRelay()
        self._client_tx: asyncio.DatagramTransport | None = None
        self._upstream_tx: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tcp_tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._client_tx, _ = await loop.create_datagram_endpoint(
            lambda: _ClientSide(self), local_addr=self._listen
        )
        self._upstream_tx, _ = await loop.create_datagram_endpoint(
            lambda: _UpstreamSide(self), remote_addr=self._upstream
        )
        self._tcp = await asyncio.start_server(self._serve_tcp, *self._listen)

    @property
    def address(self) -> tuple[str, int]:
        """Where the UDP listener is bound (useful with port 0 in tests)."""
        if self._client_tx is None:
            raise RuntimeError("DnsForwarder.address: call start() first")
        host, port = self._client_tx.get_extra_info("sockname")[:2]
        return str(host), int(port)

    @property
    def tcp_address(self) -> tuple[str, int]:
        if self._tcp is None:
            raise RuntimeError("DnsForwarder.tcp_address: call start() first")
        host, port = self._tcp.sockets[0].getsockname()[:2]
        return str(host), int(port)

    def on_client_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        out = self.relay.on_query(data, addr, asyncio.get_running_loop().time())
        if out is not None and self._upstream_tx is not None:
            self._upstream_tx.sendto(out)

    def on_upstream_datagram(self, data: bytes) -> None:
        result = self.relay.on_answer(data, asyncio.get_running_loop().time())
        if result is not None and self._client_tx is not None:
            self._client_tx.sendto(result[0], result[1])

    def on_upstream_unreachable(self) -> None:
        if self._client_tx is not None:
            for reply, client in self.relay.fail_all():
                self._client_tx.sendto(reply, client)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tcp_tasks.add(task)
        try:
            await self._relay_tcp(reader, writer)
        finally:
            writer.close()
            if task is not None:
                self._tcp_tasks.discard(task)

    async def _relay_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(*self._upstream), QUERY_TIMEOUT_S
            )
        except (OSError, TimeoutError) as exc:
            log.info("dns upstream %s:%d refused a TCP query: %s", *self._upstream, exc)
            return
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            up_writer.close()

    async def close(self) -> None:
        for tx in (self._client_tx, self._upstream_tx):
            if tx is not None:
                tx.close()
        if self._tcp is not None:
            self._tcp.close()
            tasks = list(self._tcp_tasks)
            for task in tasks:
                task.cancel()
            # Let the cancelled relays run their finally blocks (closing both sockets).
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._tcp.wait_closed()
