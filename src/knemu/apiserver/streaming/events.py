"""What a SPDY/3.1 session tells its adapter (``spdy_session.SpdySession.receive_data``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StreamOpened:
    """The client opened a stream (SYN_STREAM) with these headers; answer with ``reply``."""

    stream_id: int
    headers: dict[str, str]


@dataclass(frozen=True)
class DataReceived:
    stream_id: int
    data: bytes


@dataclass(frozen=True)
class StreamEnded:
    """The client half-closed the stream (FIN): no more data will come on it."""

    stream_id: int


@dataclass(frozen=True)
class StreamReset:
    """The stream is gone both ways (RST_STREAM from the client, or data after its FIN)."""

    stream_id: int
    status: int


@dataclass(frozen=True)
class ConnectionEnded:
    """GOAWAY from the client, or a protocol error (a GOAWAY has been queued for it)."""

    reason: str


SpdyEvent = StreamOpened | DataReceived | StreamEnded | StreamReset | ConnectionEnded
