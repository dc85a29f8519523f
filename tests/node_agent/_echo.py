"""A TCP+UDP echo server on one port, for the NodePort and hostPort relay tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import cast


class _UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(self.prefix + data, addr)


@contextlib.asynccontextmanager
async def echo_server(host: str, prefix: bytes) -> AsyncIterator[int]:
    """TCP and UDP echo on one free port of ``host`` (each reply is ``prefix + data``);
    yields the port."""

    async def tcp_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(prefix + data)
            await writer.drain()
        writer.close()

    loop = asyncio.get_running_loop()
    tcp = await asyncio.start_server(tcp_echo, host, 0)
    port = int(tcp.sockets[0].getsockname()[1])
    udp, _ = await loop.create_datagram_endpoint(lambda: _UdpEcho(prefix), local_addr=(host, port))
    try:
        yield port
    finally:
        udp.close()
        tcp.close()
        await tcp.wait_closed()
