"""The asyncio adapter: streams handed out answered, data in order, FIN as the end of
``read``, back-pressure on ``feed``, and a broken pipe ending the connection quietly."""

from __future__ import annotations

import asyncio

import pytest

from knemu.apiserver.streaming import spdy_frames as f
from knemu.apiserver.streaming.spdy_connection import STREAM_BUFFER, SpdyConnection


def _wire(*frames: f.Frame, encoder: f.FrameEncoder | None = None) -> bytes:
    encoder = encoder or f.FrameEncoder()
    return b"".join(encoder.encode(x) for x in frames)


async def test_streams_data_and_fin() -> None:
    sent: list[bytes] = []

    async def send(data: bytes) -> None:
        sent.append(data)

    connection = SpdyConnection(send)
    await connection.feed(_wire(f.SynStream(1, {"streamtype": "data"}), f.DataFrame(1, b"ab"),
                                f.DataFrame(1, b"c", fin=True)))  # fmt: skip
    stream = await connection.accept()
    assert stream is not None and stream.header("streamType") == "data"
    assert [await stream.read(), await stream.read(), await stream.read()] == [b"ab", b"c", b""]
    await stream.write(b"x" * 70_000)  # in DATA frames of at most 32 KiB
    await stream.close()
    frames = f.FrameDecoder().feed(b"".join(sent))
    assert frames[0] == f.SynReply(1, {})
    data = [x for x in frames if isinstance(x, f.DataFrame)]
    assert [len(x.data) for x in data] == [32768, 32768, 4464, 0] and data[-1].fin
    connection.feed_eof()
    assert await connection.accept() is None


async def test_a_full_stream_queue_holds_the_pipe() -> None:
    async def send(data: bytes) -> None:
        pass

    connection = SpdyConnection(send)
    encoder = f.FrameEncoder()
    await connection.feed(_wire(f.SynStream(1, {}), encoder=encoder))
    stream = await connection.accept()
    assert stream is not None
    for _ in range(STREAM_BUFFER // 65536 - 1):
        await connection.feed(_wire(f.DataFrame(1, b"x" * 65536), encoder=encoder))
    last = _wire(f.DataFrame(1, b"y" * 65536), encoder=encoder)  # reaches STREAM_BUFFER
    blocked = asyncio.create_task(connection.feed(last))
    for _ in range(20):  # loop turns enough for an unblocked feed to finish
        await asyncio.sleep(0)
    assert not blocked.done()
    assert await stream.read() == b"x" * 65536
    await asyncio.wait_for(blocked, 5)


async def test_a_broken_pipe_ends_the_connection_without_raising() -> None:
    async def send(data: bytes) -> None:
        raise ConnectionResetError("gone")

    connection = SpdyConnection(send)
    await connection.feed(_wire(f.SynStream(1, {})))
    stream = await connection.accept()
    assert stream is not None
    await stream.write(b"late")
    await connection.close()
    assert "broke" in connection.end_reason
    assert await stream.read() == b""
    assert await connection.accept() is None


@pytest.mark.parametrize("garbage", [b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01"])
async def test_a_protocol_error_answers_goaway_and_ends(garbage: bytes) -> None:
    sent: list[bytes] = []

    async def send(data: bytes) -> None:
        sent.append(data)

    connection = SpdyConnection(send)
    await connection.feed(garbage)
    assert f.FrameDecoder().feed(b"".join(sent)) == [f.GoAway(0, f.GOAWAY_PROTOCOL_ERROR)]
    assert await connection.accept() is None
