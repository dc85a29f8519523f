"""The running server on loopback, queried with `dig` (UDP and TCP), plus its limits."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator

import aiohttp
import dns.message
import pytest
from dns_cluster import dig, endpoint, endpoint_slice, populate, service

from knemu.config import DnsConfig
from knemu.dns.server import DnsServer
from knemu.testing import wait_for

Z = "cluster.local."
LOOPBACK = "127.0.0.1"


def _config(**changes: str) -> DnsConfig:
    return DnsConfig(listen=f"{LOOPBACK}:0", metrics_listen=f"{LOOPBACK}:0", **changes)  # type: ignore[arg-type]


@pytest.fixture
async def server() -> AsyncIterator[DnsServer]:
    async with DnsServer(_config(), watch=False, max_tcp_connections=4, tcp_idle_s=0.5) as srv:
        feed(srv)
        yield srv


def feed(server: DnsServer) -> None:
    """Load the fixture cluster into a server's view through its public apply()."""
    populate(server.view)
    server.mark_synced()


async def test_dig_udp_and_tcp(server: DnsServer) -> None:
    port = server.udp_address[1]
    for transport in ("+notcp", "+tcp"):
        got = await dig(port, f"web.default.svc.{Z}", "A", "+norecurse", transport)
        assert got.status == "NOERROR" and "aa" in got.flags
        assert got.answer == [f"web.default.svc.{Z} 5 IN A 10.96.0.20"]
    got = await dig(port, f"_pg._tcp.db.team-a.svc.{Z}", "SRV")
    assert got.answer == [
        f"_pg._tcp.db.team-a.svc.{Z} 5 IN SRV 0 50 5432 db-0.db.team-a.svc.{Z}",
        f"_pg._tcp.db.team-a.svc.{Z} 5 IN SRV 0 50 5432 db-1.db.team-a.svc.{Z}",
    ]
    assert f"db-0.db.team-a.svc.{Z} 5 IN A 10.244.1.5" in got.additional
    got = await dig(port, "-x", "10.96.0.20")
    assert got.answer == [f"20.0.96.10.in-addr.arpa. 5 IN PTR web.default.svc.{Z}"]
    got = await dig(port, f"box.sub.team-a.svc.{Z}", "+tcp")
    assert got.answer == [f"box.sub.team-a.svc.{Z} 5 IN A 10.244.2.40"]


async def test_dig_negative_answers(server: DnsServer) -> None:
    port = server.udp_address[1]
    got = await dig(port, f"nope.default.svc.{Z}")
    assert got.status == "NXDOMAIN" and "ns.dns.cluster.local." in got.text
    got = await dig(port, f"web.default.svc.{Z}", "AAAA")
    assert got.status == "NOERROR" and got.answer == []
    got = await dig(port, "example.com.")
    assert got.status == "REFUSED"
    got = await dig(port, f"dns-version.{Z}", "TXT", "+tcp")
    assert got.answer == [f'dns-version.{Z} 5 IN TXT "1.1.0"']


async def test_truncated_over_udp_complete_over_tcp(server: DnsServer) -> None:
    eps = [endpoint(f"10.244.7.{i}") for i in range(1, 151)]
    server.view.apply("ADDED", "Service", service("default", "big", "None", [("h", "TCP", 80)]))
    server.view.apply("ADDED", "EndpointSlice", endpoint_slice("default", "big-1", "big", eps))
    port = server.udp_address[1]
    got = await dig(port, f"big.default.svc.{Z}", "+ignore", "+noedns")
    assert "tc" in got.flags and got.answer == []
    got = await dig(port, f"big.default.svc.{Z}")  # dig retries over TCP on TC
    assert len(got.answer) == 150 and "tc" not in got.flags
    got = await dig(port, f"big.default.svc.{Z}", "+tcp")
    assert len(got.answer) == 150


async def test_forwarding_to_a_local_upstream() -> None:
    upstream_config = _config(zone="example.test")
    async with DnsServer(upstream_config, watch=False) as upstream:
        feed(upstream)
        eps = [endpoint(f"10.244.8.{i}") for i in range(1, 101)]
        upstream.view.apply(
            "ADDED", "Service", service("default", "big", "None", [("h", "TCP", 1)])
        )
        upstream.view.apply("ADDED", "EndpointSlice", endpoint_slice("default", "b", "big", eps))
        target = f"{LOOPBACK}:{upstream.udp_address[1]}"
        async with DnsServer(_config(upstream=target), watch=False) as front:
            feed(front)
            port = front.udp_address[1]
            got = await dig(port, "web.default.svc.example.test.")
            assert got.answer == ["web.default.svc.example.test. 5 IN A 10.96.0.20"]
            assert "aa" in got.flags  # the upstream's answer, relayed unchanged
            # an ExternalName leaving the zone is completed through the upstream
            far = service("default", "far", type="ExternalName",
                          external_name="web.default.svc.example.test")  # fmt: skip
            front.view.apply("ADDED", "Service", far)
            got = await dig(port, f"far.default.svc.{Z}")
            assert got.answer == [
                f"far.default.svc.{Z} 5 IN CNAME web.default.svc.example.test.",
                "web.default.svc.example.test. 5 IN A 10.96.0.20",
            ]
            # upstream truncates over UDP; the front retries it over TCP and answers fully
            got = await dig(port, "big.default.svc.example.test.", "+tcp")
            assert len(got.answer) == 100
            text = front.metrics.render()
            assert 'coredns_forward_responses_total{to="upstream",rcode="NOERROR"} 3' in text
            assert 'plugin="forward"' in text


async def test_upstream_down_gives_servfail() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:  # a port nobody answers on
        hole.bind((LOOPBACK, 0))
        target = f"{LOOPBACK}:{hole.getsockname()[1]}"
        config = _config(upstream=target)
        async with DnsServer(config, watch=False, upstream_timeout_s=0.3) as front:
            feed(front)
            got = await dig(front.udp_address[1], "example.com.")
    assert got.status == "SERVFAIL"


async def test_metrics_health_and_ready() -> None:
    async with DnsServer(_config(), watch=False) as srv:
        host, port = srv.metrics_address
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{host}:{port}/ready") as resp:
                assert resp.status == 503
            feed(srv)
            await dig(srv.udp_address[1], f"web.default.svc.{Z}")
            await dig(srv.udp_address[1], f"nope.{Z}", "+tcp")
            async with http.get(f"http://{host}:{port}/ready") as resp:
                assert resp.status == 200
            async with http.get(f"http://{host}:{port}/health") as resp:
                assert resp.status == 200
            async with http.get(f"http://{host}:{port}/metrics") as resp:
                text = await resp.text()
    assert re.search(r'coredns_dns_requests_total\{.*proto="udp".*type="A"\} 1', text)
    assert re.search(r'coredns_dns_requests_total\{.*proto="tcp".*type="A"\} 1', text)
    assert re.search(r'coredns_dns_responses_total\{.*rcode="NXDOMAIN".*\} 1', text)
    assert "coredns_dns_request_duration_seconds_count" in text


async def _tcp_connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(LOOPBACK, port)


async def test_tcp_connection_limit_and_idle_timeout(server: DnsServer) -> None:
    port = server.udp_address[1]
    held = [await _tcp_connect(port) for _ in range(4)]
    try:
        await wait_for(lambda: server.metrics.tcp_connections == 4, 5, what="4 connections")
        reader, writer = await _tcp_connect(port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed at once
        writer.close()
        assert server.metrics.dropped["tcp-connection-limit"] == 1
        # the held connections say nothing: each is closed after the idle timeout (0.5 s)
        for r, _w in held:
            assert await asyncio.wait_for(r.read(), 5) == b""
    finally:
        for _r, w in held:
            w.close()
    await wait_for(lambda: server.metrics.tcp_connections == 0, 5, what="connections closed")


async def test_tcp_pipelined_queries_and_bad_input(server: DnsServer) -> None:
    reader, writer = await _tcp_connect(server.udp_address[1])
    try:
        queries = [dns.message.make_query(f"web.default.svc.{Z}", "A") for _ in range(3)]
        garbage = b"\x00\x07" + b"\x12\x34\x00\x00\x00\x01\x00"  # too short: dropped
        wire = b"".join(q.to_wire(prepend_length=True) for q in queries[:2])
        writer.write(wire + garbage + queries[2].to_wire(prepend_length=True))
        await writer.drain()
        for query in queries:
            length = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), 5), "big")
            reply = dns.message.from_wire(await reader.readexactly(length))
            assert reply.id == query.id and reply.answer
        writer.write(b"\x00\x00")  # a zero length is a protocol error: the server hangs up
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()
    assert server.metrics.dropped["short-header"] == 1
    assert server.metrics.dropped["tcp-bad-length"] == 1


async def test_udp_flood_is_bounded(server: DnsServer) -> None:
    """2000 datagrams, half garbage, in bursts of 50 that fit the socket buffer: every one is
    answered or counted, nothing is queued or left behind, and the server still answers."""
    port = server.udp_address[1]
    metrics = server.metrics
    good = dns.message.make_query(f"web.default.svc.{Z}", "A").to_wire()

    def handled() -> int:
        return sum(metrics.responses.values()) + sum(metrics.dropped.values())

    start = handled()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((LOOPBACK, port))
        for burst in range(40):
            for i in range(50):
                n = burst * 50 + i
                sock.send(good if n % 2 else bytes([n % 256]) * (n % 40))
            target = start + (burst + 1) * 50
            await wait_for(lambda t=target: handled() >= t, 10, what=f"burst {burst} handled")  # type: ignore[misc]
    assert handled() == start + 2000
    assert server.statistics()["tasks"] == 0  # no per-query tasks left behind
    assert metrics.dropped["short-header"] > 0
    got = await dig(port, f"web.default.svc.{Z}")
    assert got.answer == [f"web.default.svc.{Z} 5 IN A 10.96.0.20"]


async def test_close_ends_open_connections_at_once() -> None:
    """Shutdown (SIGTERM in `knemu dns`) does not wait for idle clients' timeouts (10 s)."""
    async with DnsServer(_config(), watch=False) as srv:
        feed(srv)
        reader, writer = await _tcp_connect(srv.udp_address[1])
        await wait_for(lambda: srv.metrics.tcp_connections == 1, 5, what="connection open")
        started = asyncio.get_running_loop().time()
    try:
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert asyncio.get_running_loop().time() - started < 5
    finally:
        writer.close()


async def test_client_that_never_reads_loses_its_slot(server: DnsServer) -> None:
    """Pipelined queries for a 16 KB answer, replies never read: once the server's buffers are
    full its writes wait at most the idle timeout, then the connection is closed."""
    eps = [endpoint(f"10.244.{i // 250}.{i % 250 + 1}") for i in range(1000)]
    server.view.apply("ADDED", "Service", service("default", "huge", "None", [("h", "TCP", 80)]))
    server.view.apply("ADDED", "EndpointSlice", endpoint_slice("default", "huge-1", "huge", eps))
    query = dns.message.make_query(f"huge.default.svc.{Z}", "A").to_wire(prepend_length=True)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, (LOOPBACK, server.udp_address[1]))
        await loop.sock_sendall(sock, query * 300)
        await wait_for(lambda: server.metrics.tcp_connections == 1, 5, what="connection open")
        await wait_for(lambda: server.metrics.tcp_connections == 0, 15, what="slot freed")
        # it was the blocked write that ended it, not the idle timeout after the last query
        assert sum(server.metrics.responses.values()) < 300
