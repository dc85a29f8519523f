"""The built-in HTTP workload over real loopback sockets: keep-alive, bodies, bad input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from knemu.node_agent.runtime import workloads

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(workloads.HttpHandler("echo", "pod-a"), "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def read_response(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    status, *lines = head.strip().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    body = await reader.readexactly(int(headers["content-length"]))
    return status, headers, body


async def test_keep_alive_serves_several_requests_on_one_connection(echo_port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_port)
    try:
        writer.write(b"GET /one HTTP/1.1\r\nHost: svc:8080\r\n\r\n")
        writer.write(
            b"POST /two HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\n\r\nhello"
            b"PUT /three HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n"
        )
        await writer.drain()
        bodies = [await read_response(reader) for _ in range(3)]
    finally:
        writer.close()
    assert [b[0] for b in bodies] == ["HTTP/1.1 200 OK"] * 3
    assert bodies[0][1]["connection"] == "keep-alive"
    assert [b[2].decode() for b in bodies] == [
        f"Host=svc  Path={p}  From=pod-a  ClientIP=127.0.0.1  XFF=\n"
        for p in ("/one", "/two", "/three")
    ]


async def test_connection_close_and_bad_request(echo_port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_port)
    writer.write(b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await writer.drain()
    head = await reader.read()  # the server closes after a Connection: close request
    writer.close()
    assert head.startswith(b"HTTP/1.1 200 OK") and head.endswith(b"\r\n\r\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_port)
    writer.write(b"NONSENSE\r\n\r\n")
    await writer.drain()
    reply = await reader.read()
    writer.close()
    assert reply.startswith(b"HTTP/1.1 400 Bad Request")
