"""The server side of one SPDY/3.1 connection, without I/O.

Theory of operation.  ``receive_data(bytes)`` decodes frames and returns events
(``knemu.apiserver.streaming.events``); ``reply``, ``send_data``, ``end_stream``,
``reset_stream`` and ``go_away`` queue frames; ``data_to_send()`` hands the queued bytes to the
adapter, which writes them in that order.  Streams are opened by the client only (odd ids,
increasing), as kubectl does for port-forward (an error and a data stream per connection) and
exec/attach (error, stdin, stdout, stderr, resize).  A stream lives until both halves are
closed (FIN each way) or either side resets it.

Flow control: SPDY/3.1 specifies windows, but spdystream (the Go implementation in kubectl and
the kubelet, the only peers of this server) neither sends WINDOW_UPDATE nor honours one, so
this session ignores WINDOW_UPDATE and SETTINGS and sends neither; back-pressure comes from the
adapter reading the socket no faster than the streams' consumers take the data.

Pings from the client are echoed (section 2.6.5); protocol errors become a GOAWAY with status
PROTOCOL_ERROR and a ``ConnectionEnded`` event naming the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from knemu.apiserver.streaming import spdy_frames as f
from knemu.apiserver.streaming.events import (
    ConnectionEnded,
    DataReceived,
    SpdyEvent,
    StreamEnded,
    StreamOpened,
    StreamReset,
)

MAX_STREAMS = 64  # streams open at once on one connection; more are refused (REFUSED_STREAM)


@dataclass
class _Stream:
    remote_open: bool = True
    local_open: bool = True


class SpdySession:
    def __init__(self, max_streams: int = MAX_STREAMS) -> None:
        self._decoder = f.FrameDecoder()
        self._encoder = f.FrameEncoder()
        self._out = bytearray()
        self._streams: dict[int, _Stream] = {}
        self._last_stream_id = 0
        self._max_streams = max_streams
        self.ended = False

    # ---- input --------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[SpdyEvent]:
        if self.ended:
            return []
        try:
            frames = self._decoder.feed(data)
        except f.SpdyProtocolError as exc:
            return self._fail(str(exc))
        events: list[SpdyEvent] = []
        for frame in frames:
            events += self._handle(frame)
            if self.ended:
                break
        return events

    def _handle(self, frame: f.Frame) -> list[SpdyEvent]:
        match frame:
            case f.SynStream():
                return self._handle_syn_stream(frame)
            case f.DataFrame():
                return self._handle_data(frame)
            case f.RstStream(stream_id, status):
                if self._streams.pop(stream_id, None) is None:
                    return []
                return [StreamReset(stream_id, status)]
            case f.Ping(ping_id):
                if ping_id % 2:  # the client's; even ids would be answers to ours
                    self._send(f.Ping(ping_id))
                return []
            case f.GoAway(_, status):
                self.ended = True
                return [ConnectionEnded(f"the client said GOAWAY (status {status})")]
            case f.SynReply(stream_id) | f.HeadersFrame(stream_id):
                if stream_id not in self._streams:
                    self._send(f.RstStream(stream_id, f.INVALID_STREAM))
                return []
        return []  # SETTINGS, WINDOW_UPDATE: see the module docstring

    def _handle_syn_stream(self, frame: f.SynStream) -> list[SpdyEvent]:
        sid = frame.stream_id
        if sid % 2 == 0 or sid <= self._last_stream_id:
            return self._fail(f"SYN_STREAM {sid}: client stream ids must be odd and increasing")
        self._last_stream_id = sid
        if len(self._streams) >= self._max_streams:
            self._send(f.RstStream(sid, f.REFUSED_STREAM))
            return []
        self._streams[sid] = _Stream(remote_open=not frame.fin)
        events: list[SpdyEvent] = [StreamOpened(sid, frame.headers)]
        if frame.fin:
            events.append(StreamEnded(sid))
        return events

    def _handle_data(self, frame: f.DataFrame) -> list[SpdyEvent]:
        sid = frame.stream_id
        stream = self._streams.get(sid)
        if stream is None:
            self._send(f.RstStream(sid, f.INVALID_STREAM))
            return []
        if not stream.remote_open:
            self._drop(sid)
            self._send(f.RstStream(sid, f.STREAM_ALREADY_CLOSED))
            return [StreamReset(sid, f.STREAM_ALREADY_CLOSED)]
        events: list[SpdyEvent] = []
        if frame.data:
            events.append(DataReceived(sid, frame.data))
        if frame.fin:
            stream.remote_open = False
            events.append(StreamEnded(sid))
            self._forget_if_done(sid)
        return events

    def _fail(self, reason: str) -> list[SpdyEvent]:
        self._send(f.GoAway(self._last_stream_id, f.GOAWAY_PROTOCOL_ERROR))
        self.ended = True
        return [ConnectionEnded(f"protocol error: {reason}")]

    # ---- output -------------------------------------------------------------------------------

    def reply(self, stream_id: int) -> None:
        """Accept a stream the client opened (SYN_REPLY, empty headers, as the kubelet does)."""
        if stream_id in self._streams:
            self._send(f.SynReply(stream_id, {}))

    def send_data(self, stream_id: int, data: bytes, fin: bool = False) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or not stream.local_open:
            return
        self._send(f.DataFrame(stream_id, data, fin))
        if fin:
            stream.local_open = False
            self._forget_if_done(stream_id)

    def end_stream(self, stream_id: int) -> None:
        self.send_data(stream_id, b"", fin=True)

    def reset_stream(self, stream_id: int, status: int = f.CANCEL) -> None:
        if self._streams.pop(stream_id, None) is not None:
            self._send(f.RstStream(stream_id, status))

    def go_away(self) -> None:
        if not self.ended:
            self._send(f.GoAway(self._last_stream_id, f.GOAWAY_OK))
            self.ended = True

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def is_open(self, stream_id: int) -> bool:
        return stream_id in self._streams

    # ---- helpers ------------------------------------------------------------------------------

    def _send(self, frame: f.Frame) -> None:
        self._out += self._encoder.encode(frame)

    def _drop(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)

    def _forget_if_done(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None and not stream.remote_open and not stream.local_open:
            del self._streams[stream_id]
