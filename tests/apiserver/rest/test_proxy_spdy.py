"""Port-forward over SPDY/3.1 through the api-server, in both of kubectl's transports, to a real
agent API on loopback (``agent`` fixture), spoken by a client built from knemu's own frames:
kubectl's stream pairs (error + data per connection), half-close, the error stream's reason,
pings, and the refusals of the upgrade."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from yarl import URL

from knemu.apiserver.streaming import spdy_frames as f
from knemu.testing import free_port

from .rest_env import NOW, RestEnv, node, pod

PATH = "/api/v1/namespaces/default/pods/{}/portforward"
TUNNEL = "SPDY/3.1+portforward.k8s.io"


class Client:
    """A SPDY client over some pipe: ``send`` frames, ``until`` a condition on what came."""

    def __init__(self, write: Callable[[bytes], Awaitable[None]],
                 read: Callable[[], Awaitable[bytes]]) -> None:  # fmt: skip
        self.write, self.read = write, read
        self.encoder, self.decoder = f.FrameEncoder(), f.FrameDecoder()
        self.frames: list[f.Frame] = []

    async def send(self, *frames: f.Frame) -> None:
        await self.write(b"".join(self.encoder.encode(x) for x in frames))

    async def until(self, done: Callable[[list[f.Frame]], bool]) -> list[f.Frame]:
        while not done(self.frames):
            chunk = await asyncio.wait_for(self.read(), 10)
            assert chunk, f"the server closed the connection; frames so far: {self.frames}"
            self.frames += self.decoder.feed(chunk)
        return self.frames

    def data(self, stream_id: int) -> bytes:
        return b"".join(x.data for x in self.frames if isinstance(x, f.DataFrame)
                        and x.stream_id == stream_id)  # fmt: skip

    def ended(self, stream_id: int) -> bool:
        return any(isinstance(x, f.DataFrame) and x.stream_id == stream_id and x.fin
                   for x in self.frames)  # fmt: skip


def _pair(request_id: int, port: int, first_id: int) -> list[f.Frame]:
    """What kubectl sends for one local connection: the error stream, then the data stream."""
    common = {"port": str(port), "requestid": str(request_id)}
    return [f.SynStream(first_id, {"streamtype": "error", **common}),
            f.SynStream(first_id + 2, {"streamtype": "data", **common})]  # fmt: skip


async def _forward_twice(client: Client, echo: int) -> None:
    """A working forward, then one to a closed port, on one connection."""
    await client.send(*_pair(0, echo, 1), f.Ping(1))
    await client.until(lambda got: f.SynReply(3, {}) in got and f.Ping(1) in got)
    assert f.SynReply(1, {}) in client.frames
    await client.send(f.DataFrame(3, b"ping"), f.DataFrame(3, b"", fin=True))
    await client.until(lambda _: client.ended(3) and client.ended(1))
    assert client.data(3) == b"echo:ping" and client.data(1) == b""
    closed = free_port()
    await client.send(*_pair(1, closed, 5))
    await client.until(lambda _: client.ended(5) and client.ended(7))
    assert f"error forwarding port {closed} to pod" in client.data(5).decode()
    assert client.data(7) == b""


async def test_portforward_in_a_websocket_tunnel(rest: RestEnv, agent: tuple[int, int]) -> None:
    api, echo = agent
    rest.store.create(node("n1", api), NOW)
    rest.store.create(pod("p", "n1"), NOW)
    async with rest.http.ws_connect(rest.base + PATH.format("p"), protocols=(TUNNEL,)) as ws:
        assert ws.protocol == TUNNEL
        await _forward_twice(Client(ws.send_bytes, ws.receive_bytes), echo)


async def upgrade(rest: RestEnv, path: str, protocol: str) -> tuple[bytes, Client]:
    """POST ``path`` with ``Upgrade: SPDY/3.1`` on a TLS connection of its own, as the admin;
    (response head, client)."""
    url = URL(rest.base)
    tls = rest.admin.ssl_context()
    reader, writer = await asyncio.open_connection(url.host, url.port, ssl=tls)

    async def write(data: bytes) -> None:
        writer.write(data)
        await writer.drain()

    auth = "".join(f"{k}: {v}\r\n" for k, v in rest.admin.headers().items())
    await write(f"POST {path} HTTP/1.1\r\nHost: {url.host}\r\nContent-Length: 0\r\n{auth}"
                f"Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: "
                f"{protocol}\r\n\r\n".encode())  # fmt: skip
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return head, Client(write, lambda: reader.read(65536))


async def test_portforward_over_the_spdy_upgrade(rest: RestEnv, agent: tuple[int, int]) -> None:
    api, echo = agent
    rest.store.create(node("n1", api), NOW)
    rest.store.create(pod("p", "n1"), NOW)
    head, client = await upgrade(rest, PATH.format("p"), "portforward.k8s.io")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"X-Stream-Protocol-Version: portforward.k8s.io" in head
    assert b"Upgrade: SPDY/3.1" in head
    await _forward_twice(client, echo)
    await client.send(f.GoAway(7))
    assert await asyncio.wait_for(client.read(), 10) == b""  # the server ends the connection


async def test_spdy_refusals(rest: RestEnv, agent: tuple[int, int]) -> None:
    api, _ = agent
    rest.store.create(node("n1", api), NOW)
    rest.store.create(pod("p", "n1"), NOW)
    head, _ = await upgrade(rest, PATH.format("p"), "v3.channel.k8s.io")
    assert head.startswith(b"HTTP/1.1 403 ")
    head, _ = await upgrade(rest, PATH.format("nope"), "portforward.k8s.io")
    assert head.startswith(b"HTTP/1.1 404 ")


async def test_garbage_on_the_upgraded_socket_gets_goaway(
    rest: RestEnv, agent: tuple[int, int]
) -> None:
    api, _ = agent
    rest.store.create(node("n1", api), NOW)
    rest.store.create(pod("p", "n1"), NOW)
    _, client = await upgrade(rest, PATH.format("p"), "portforward.k8s.io")
    await client.write(b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01")  # SPDY/2 PING
    frames = await client.until(lambda got: bool(got))
    assert frames == [f.GoAway(0, f.GOAWAY_PROTOCOL_ERROR)]
    assert await asyncio.wait_for(client.read(), 10) == b""
