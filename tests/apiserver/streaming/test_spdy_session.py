"""The server session: streams opened, data, half-closes, resets, pings and protocol errors,
driven with frames from a client-side encoder and checked on the frames it answers."""

from __future__ import annotations

from hypothesis import given, strategies as st

from knemu.apiserver.streaming import spdy_frames as f
from knemu.apiserver.streaming.events import (
    ConnectionEnded,
    DataReceived,
    StreamEnded,
    StreamOpened,
    StreamReset,
)
from knemu.apiserver.streaming.spdy_session import SpdySession


class Client:
    """The client's side of the wire: encodes what it sends, decodes what the server sends."""

    def __init__(self, session: SpdySession) -> None:
        self.session, self.encoder, self.decoder = session, f.FrameEncoder(), f.FrameDecoder()

    def send(self, *frames: f.Frame) -> list[object]:
        return list(self.session.receive_data(b"".join(self.encoder.encode(x) for x in frames)))

    def received(self) -> list[f.Frame]:
        return self.decoder.feed(self.session.data_to_send())


ERROR = {"streamtype": "error", "port": "80", "requestid": "0"}


def test_open_reply_data_and_half_closes_both_ways() -> None:
    session = SpdySession()
    client = Client(session)
    assert client.send(f.SynStream(1, ERROR)) == [StreamOpened(1, ERROR)]
    session.reply(1)
    assert client.received() == [f.SynReply(1, {})]
    assert client.send(f.DataFrame(1, b"abc"), f.DataFrame(1, b"", fin=True)) == [
        DataReceived(1, b"abc"), StreamEnded(1)]  # fmt: skip
    assert session.is_open(1)  # our half is still open
    session.send_data(1, b"xyz")
    session.end_stream(1)
    assert client.received() == [f.DataFrame(1, b"xyz"), f.DataFrame(1, b"", fin=True)]
    assert not session.is_open(1)
    session.send_data(1, b"late")  # after both FINs: nothing goes out
    assert client.received() == []


def test_stream_opened_with_fin_is_half_closed_at_once() -> None:
    client = Client(SpdySession())
    assert client.send(f.SynStream(1, ERROR, fin=True)) == [StreamOpened(1, ERROR), StreamEnded(1)]


def test_data_after_fin_resets_the_stream() -> None:
    client = Client(SpdySession())
    client.send(f.SynStream(1, ERROR, fin=True))
    assert client.send(f.DataFrame(1, b"x")) == [StreamReset(1, f.STREAM_ALREADY_CLOSED)]
    assert client.received() == [f.RstStream(1, f.STREAM_ALREADY_CLOSED)]


def test_data_on_an_unknown_stream_is_answered_invalid_stream() -> None:
    client = Client(SpdySession())
    assert client.send(f.DataFrame(9, b"x")) == []
    assert client.received() == [f.RstStream(9, f.INVALID_STREAM)]


def test_client_reset_ends_the_stream_and_our_writes() -> None:
    session = SpdySession()
    client = Client(session)
    client.send(f.SynStream(1, ERROR))
    assert client.send(f.RstStream(1, f.CANCEL)) == [StreamReset(1, f.CANCEL)]
    session.send_data(1, b"x")
    assert client.received() == []


def test_server_reset() -> None:
    session = SpdySession()
    client = Client(session)
    client.send(f.SynStream(1, ERROR))
    session.reset_stream(1)
    assert client.received() == [f.RstStream(1, f.CANCEL)]
    assert client.send(f.DataFrame(1, b"x")) == []  # answered INVALID_STREAM, no event


def test_pings_from_the_client_are_echoed() -> None:
    client = Client(SpdySession())
    assert client.send(f.Ping(1), f.Ping(2)) == []
    assert client.received() == [f.Ping(1)]  # even ids would answer pings the server sent


def test_settings_and_window_updates_are_ignored() -> None:
    client = Client(SpdySession())
    assert client.send(f.Settings({7: 1}), f.WindowUpdate(0, 10)) == []
    assert client.received() == []


def test_stream_ids_must_be_odd_and_increasing() -> None:
    for ids in ([2], [3, 1], [1, 1]):
        session = SpdySession()
        client = Client(session)
        events = client.send(*(f.SynStream(i, ERROR) for i in ids))
        assert isinstance(events[-1], ConnectionEnded) and "odd and increasing" in events[-1].reason
        assert client.received()[-1] == f.GoAway(max(ids[:-1], default=0), f.GOAWAY_PROTOCOL_ERROR)
        assert session.ended and client.send(f.Ping(1)) == []


def test_too_many_streams_are_refused() -> None:
    session = SpdySession(max_streams=2)
    client = Client(session)
    client.send(f.SynStream(1, ERROR), f.SynStream(3, ERROR))
    assert client.send(f.SynStream(5, ERROR)) == []
    assert client.received() == [f.RstStream(5, f.REFUSED_STREAM)]


def test_goaway_from_the_client_ends_the_connection() -> None:
    session = SpdySession()
    assert Client(session).send(f.GoAway(0)) == [
        ConnectionEnded("the client said GOAWAY (status 0)")
    ]
    session.go_away()  # no second GOAWAY after the connection ended
    assert session.data_to_send() == b""


def test_garbage_ends_the_connection_with_goaway() -> None:
    session = SpdySession()
    events = session.receive_data(bytes.fromhex("800200060000000400000001"))
    assert events == [
        ConnectionEnded("protocol error: SPDY version 2; only 3 (SPDY/3.1) is spoken")
    ]
    assert f.FrameDecoder().feed(session.data_to_send()) == [f.GoAway(0, f.GOAWAY_PROTOCOL_ERROR)]


@given(st.lists(st.binary(max_size=64), max_size=8))
def test_session_survives_any_bytes(chunks: list[bytes]) -> None:
    session = SpdySession()
    for chunk in chunks:
        session.receive_data(chunk)
        session.data_to_send()
