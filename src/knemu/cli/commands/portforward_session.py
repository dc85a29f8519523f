"""The I/O of ``knemu port-forward``: local listeners, one websocket per connection.

Output is kubectl's: ``Forwarding from 127.0.0.1:8080 -> 80`` per listener and address, then
``Handling connection for 8080`` per accepted connection.  A failed forward (the pod refuses
the port, the api-server refuses the upgrade) is reported for that connection, which is
closed; the listeners keep running until SIGINT or SIGTERM, which close everything.  At most
MAX_CONNECTIONS are open at once; more are closed as they come, with a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from dataclasses import dataclass, field

import aiohttp

from knemu.cli.client import REASONS, ApiClient
from knemu.errors import LocalError
from knemu.portforward_frames import (
    CHUNK,
    MAX_MESSAGE,
    PORTFORWARD_PROTOCOLS,
    ClientDecoder,
    close_frame,
    data_channel,
    frame,
)

MAX_CONNECTIONS = 128


@dataclass
class Listener:
    local: int  # 0: a free port, chosen by the first address's bind
    remote: int  # the pod's port


@dataclass
class _Forwarder:
    url: str
    session: aiohttp.ClientSession
    connections: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(
        self, listener: Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        local = writer.get_extra_info("sockname")[1]
        print(f"Handling connection for {local}", flush=True)
        if len(self.connections) >= MAX_CONNECTIONS:
            _report(local, listener.remote, f"{MAX_CONNECTIONS} connections are open already")
            writer.close()
            return
        self.connections.add(task)
        try:
            await self._forward(local, listener.remote, reader, writer)
        finally:
            self.connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _forward(
        self, local: int, remote: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            ws = await self.session.ws_connect(
                self.url,
                params=[("ports", str(remote))],
                protocols=PORTFORWARD_PROTOCOLS,
                max_msg_size=MAX_MESSAGE,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
            )
        except aiohttp.WSServerHandshakeError as exc:
            why = f"the api-server refused it (HTTP {exc.status} {REASONS.get(exc.status, '')})"
            _report(local, remote, f"{why}; check the pod and `knemu get nodes`")
            return
        except aiohttp.ClientError as exc:
            _report(local, remote, f"cannot reach the api-server at {self.url}: {exc}")
            return
        async with ws:
            sender = asyncio.create_task(_to_server(ws, reader), name=f"port-forward {local} out")
            try:
                await _to_local(ws, writer, ClientDecoder([remote]), local)
            finally:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)


def _report(local: int, remote: int, why: str) -> None:
    print(f"error: an error occurred forwarding {local} -> {remote}: {why}", file=sys.stderr,
          flush=True)  # fmt: skip


async def _to_server(ws: aiohttp.ClientWebSocketResponse, reader: asyncio.StreamReader) -> None:
    """Local bytes to the pod; our EOF becomes a half-close there; a reset ends the session."""
    try:
        while chunk := await reader.read(CHUNK):
            await ws.send_bytes(frame(data_channel(0), chunk))
        await ws.send_bytes(close_frame(0))
    except ConnectionError:
        await ws.close()


async def _to_local(
    ws: aiohttp.ClientWebSocketResponse,
    writer: asyncio.StreamWriter,
    decoder: ClientDecoder,
    local: int,
) -> None:
    """The pod's bytes to the local connection until the server closes the websocket."""
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.BINARY:
            break
        try:
            got = decoder.feed(msg.data)
        except LocalError as exc:
            _report(local, decoder.ports[0], exc.message)
            return
        if got is None:
            continue
        if got.error:
            _report(local, decoder.ports[0], got.error)
            continue
        try:
            writer.write(got.data)
            await writer.drain()  # the local reader sets the pace: nothing piles up here
        except ConnectionError:
            return


async def _listen(
    fwd: _Forwarder, addresses: list[str], listener: Listener
) -> list[asyncio.Server]:
    servers: list[asyncio.Server] = []
    port = listener.local
    for address in addresses:

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await fwd.handle(listener, r, w)

        try:
            server = await asyncio.start_server(handle, address, port, limit=CHUNK)
        except OSError as exc:
            for s in servers:
                s.close()
            raise LocalError(
                f"unable to listen on {address}:{port}: {exc.strerror or exc}; choose another "
                "local port (or :REMOTE for a free one)"
            ) from None
        servers.append(server)
        port = server.sockets[0].getsockname()[1]  # a free port: the same on every address
        host = f"[{address}]" if ":" in address else address
        print(f"Forwarding from {host}:{port} -> {listener.remote}", flush=True)
    return servers


async def forward(
    client: ApiClient, url: str, addresses: list[str], listeners: list[Listener]
) -> int:
    """Listen and forward until SIGINT or SIGTERM; then close listeners and connections."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10.0)
    servers: list[asyncio.Server] = []
    async with aiohttp.ClientSession(timeout=timeout, **client.session_options()) as session:
        fwd = _Forwarder(url, session)
        try:
            for listener in listeners:
                servers += await _listen(fwd, addresses, listener)
            await stop.wait()
        finally:
            for server in servers:
                server.close()
            for task in list(fwd.connections):
                task.cancel()
            await asyncio.gather(*fwd.connections, return_exceptions=True)
            for server in servers:
                await server.wait_closed()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
    return 0
