"""The asyncio adapter of ``SpdySession``: bytes in from a pipe, streams out to handlers.

The pipe is either a socket taken over after ``101 Switching Protocols`` (``Upgrade:
SPDY/3.1``) or a websocket whose binary messages carry the SPDY bytes (subprotocol
``SPDY/3.1+portforward.k8s.io``, client-go's ``tunneling_connection.go``); the adapter sees only
``feed(bytes)``, ``feed_eof()`` and a ``send(bytes)`` coroutine.  Each stream's received data
waits in its queue; past ``STREAM_BUFFER`` bytes ``feed`` waits, so the pipe is read no faster
than the stream consumers take the data (the session has no flow-control windows) and a
connection holds at most MAX_STREAMS x STREAM_BUFFER bytes (plus one frame each) for streams
nobody reads.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from knemu.apiserver.streaming.events import (
    ConnectionEnded,
    DataReceived,
    StreamEnded,
    StreamOpened,
    StreamReset,
)
from knemu.apiserver.streaming.spdy_session import MAX_STREAMS, SpdySession

STREAM_BUFFER = 256 * 1024  # bytes buffered per stream before the pipe stops being read
CHUNK = 32 * 1024  # bytes per DATA frame sent


class SpdyStream:
    """One client-opened stream: ``read`` gives b"" at its end, ``close`` half-closes ours."""

    def __init__(self, connection: SpdyConnection, stream_id: int, headers: dict[str, str]):
        self.connection, self.stream_id, self.headers = connection, stream_id, headers
        self._chunks: deque[bytes | None] = deque()
        self._buffered = 0  # bytes in _chunks
        self._readable = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._ended = False

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    async def read(self) -> bytes:
        while not self._ended and not self._chunks:
            self._readable.clear()
            await self._readable.wait()
        if self._ended:
            return b""
        chunk = self._chunks.popleft()
        if chunk is None:
            self._ended = True
            return b""
        self._buffered -= len(chunk)
        if self._buffered < STREAM_BUFFER:
            self._space.set()
        return chunk

    async def write(self, data: bytes) -> None:
        session = self.connection.session
        for start in range(0, len(data), CHUNK):
            session.send_data(self.stream_id, data[start : start + CHUNK])
        await self.connection.flush()

    async def close(self) -> None:
        self.connection.session.end_stream(self.stream_id)
        await self.connection.flush()

    async def _deliver(self, chunk: bytes) -> None:
        """Queue ``chunk``; past STREAM_BUFFER bytes, wait until the reader takes some."""
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        self._readable.set()
        if self._buffered >= STREAM_BUFFER:
            self._space.clear()
            await self._space.wait()

    def _finish(self) -> None:
        """No more data after what is queued: FIN, reset or the connection's end."""
        self._chunks.append(None)
        self._readable.set()
        self._space.set()


class SpdyConnection:
    def __init__(self, send: Callable[[bytes], Awaitable[None]]) -> None:
        self.session = SpdySession()
        self._send = send
        self._send_lock = asyncio.Lock()
        self._streams: dict[int, SpdyStream] = {}
        self._accepted: asyncio.Queue[SpdyStream | None] = asyncio.Queue(MAX_STREAMS + 1)
        self.end_reason = ""
        self._broken = False  # the pipe failed: nothing more is sent

    async def accept(self) -> SpdyStream | None:
        """The next stream the client opens (already answered); None once the connection ends."""
        stream = await self._accepted.get()
        if stream is None:
            self._accepted.put_nowait(None)  # for any other waiter
        return stream

    async def feed(self, data: bytes) -> None:
        for event in self.session.receive_data(data):
            match event:
                case StreamOpened(sid, headers):
                    stream = self._streams[sid] = SpdyStream(self, sid, headers)
                    self.session.reply(sid)
                    self._accepted.put_nowait(stream)
                case DataReceived(sid, chunk):
                    if sid in self._streams:
                        await self._streams[sid]._deliver(chunk)
                case StreamEnded(sid) | StreamReset(sid):
                    stream_or_none = self._streams.pop(sid, None)
                    if stream_or_none is not None:
                        stream_or_none._finish()
                case ConnectionEnded(reason):
                    self._end(reason)
        await self.flush()

    def feed_eof(self) -> None:
        self._end("the client closed the connection")

    async def flush(self) -> None:
        """Send what the session queued; a pipe that is gone ends the connection instead of
        raising into every stream's handler."""
        async with self._send_lock:
            data = self.session.data_to_send()
            if not data or self._broken:
                return
            try:
                await self._send(data)
            except (ConnectionError, RuntimeError) as exc:  # aiohttp: closing transport
                self._broken = True
                self._end(f"the connection to the client broke: {exc}")

    async def close(self) -> None:
        """GOAWAY to the client; the caller then closes the pipe."""
        self.session.go_away()
        await self.flush()
        self._end("closed by the server")

    def _end(self, reason: str) -> None:
        if not self.end_reason:
            self.end_reason = reason
        for stream in self._streams.values():
            stream._finish()
        self._streams.clear()
        if not self._accepted.full():
            self._accepted.put_nowait(None)
