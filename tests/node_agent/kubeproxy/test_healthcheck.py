"""kube-proxy's service healthcheck (healthCheckNodePort): the answers, then the server on
loopback."""

from __future__ import annotations

import asyncio
import json

from knemu.node_agent.kubeproxy.healthcheck import MAX_HEAD_BYTES, answer, reply_to
from knemu.node_agent.kubeproxy.healthcheck_server import HealthCheckServers
from knemu.testing import free_port

GET = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def test_local_endpoints_answer_200_with_the_count() -> None:
    a = answer("default/web", 2)
    assert (a.status, a.reason) == (200, "OK")
    assert json.loads(a.body) == {
        "service": {"namespace": "default", "name": "web"},
        "localEndpoints": 2,
        "serviceProxyHealthy": True,
    }
    assert ("X-Load-Balancing-Endpoint-Weight", "2") in a.headers
    raw = a.encode()
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and raw.endswith(a.body)
    assert f"Content-Length: {len(a.body)}".encode() in raw


def test_no_local_endpoint_answers_503() -> None:
    a = answer("default/web", 0)
    assert a.status == 503 and json.loads(a.body)["localEndpoints"] == 0


def test_requests_that_are_not_a_get_are_refused() -> None:
    assert reply_to(GET, "default/web", 1).status == 200
    assert reply_to(b"POST / HTTP/1.1\r\n\r\n", "default/web", 1).status == 405
    assert reply_to(b"garbage\r\n\r\n", "default/web", 1).status == 400
    assert reply_to(b"G" * (MAX_HEAD_BYTES + 1), "default/web", 1).status == 431


async def _get(port: int, request: bytes = GET) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    data = await reader.read()
    writer.close()
    return data


def test_server_answers_from_the_live_count_and_follows_the_ports() -> None:
    counts = {"default/web": 0}

    async def scenario() -> None:
        port = free_port()
        servers = HealthCheckServers("127.0.0.1", lambda key: counts.get(key, 0))
        await servers.apply({port: "default/web"})
        try:
            assert (await _get(port)).startswith(b"HTTP/1.1 503 ")
            counts["default/web"] = 1
            reply = await _get(port)
            assert reply.startswith(b"HTTP/1.1 200 ")
            assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["localEndpoints"] == 1
            await servers.apply({})
            assert servers.ports == {}
            try:
                await _get(port)
            except OSError:
                pass
            else:
                raise AssertionError("the closed healthcheck port still answered")
        finally:
            await servers.close()

    asyncio.run(scenario())
