"""SPDY/3.1 framing: a vector kubectl v1.32 sent, vectors from the draft, round trips, and the
decoder fuzzed (it parses or raises SpdyProtocolError, never anything else)."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from knemu.apiserver.streaming import spdy_frames as f

# What `kubectl port-forward` (v1.32, KUBECTL_PORT_FORWARD_WEBSOCKETS=false) sent first after
# the 101: SYN_STREAM 1 with its zlib-compressed headers, then a PING.
KUBECTL_OPENING = bytes.fromhex(
    "800300010000003d0000000100000000000078f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614"
    "cb45a024cc6461c0c0c0c0590489c44c50e2663400000000ffff800300060000000400000001"
)


def test_decodes_what_kubectl_sends() -> None:
    assert f.FrameDecoder().feed(KUBECTL_OPENING) == [
        f.SynStream(1, {"streamtype": "error", "port": "80", "requestid": "0"}),
        f.Ping(1),
    ]


def test_decodes_however_the_bytes_are_split() -> None:
    decoder = f.FrameDecoder()
    frames = [frame for i in range(len(KUBECTL_OPENING)) for frame in
              decoder.feed(KUBECTL_OPENING[i : i + 1])]  # fmt: skip
    assert frames == f.FrameDecoder().feed(KUBECTL_OPENING)


@pytest.mark.parametrize(
    ("frame", "wire"),
    [
        (f.Ping(1), "80030006 00000004 00000001"),
        (f.RstStream(3, f.CANCEL), "80030003 00000008 00000003 00000005"),
        (f.GoAway(5, f.GOAWAY_OK), "80030007 00000008 00000005 00000000"),
        (f.WindowUpdate(1, 4096), "80030009 00000008 00000001 00001000"),
        (f.Settings({7: 65536}), "80030004 0000000c 00000001 00000007 00010000"),
        (f.DataFrame(1, b"hi", fin=True), "00000001 01000002 6869"),
        (f.DataFrame(7, b""), "00000007 00000000"),
    ],
)
def test_fixed_layout_frames_match_the_draft(frame: f.Frame, wire: str) -> None:
    raw = bytes.fromhex(wire.replace(" ", ""))
    assert f.FrameEncoder().encode(frame) == raw
    assert f.FrameDecoder().feed(raw) == [frame]


def test_header_blocks_share_one_zlib_stream_each_way() -> None:
    encoder, decoder = f.FrameEncoder(), f.FrameDecoder()
    frames: list[f.Frame] = [
        f.SynStream(1, {"streamtype": "error", "port": "80", "requestid": "0"}),
        f.SynStream(3, {"streamtype": "data", "port": "80", "requestid": "0"}, fin=True),
        f.SynReply(1, {}),
        f.HeadersFrame(3, {"x": "a\x00b"}),
    ]
    wire = b"".join(encoder.encode(frame) for frame in frames)
    assert decoder.feed(wire) == frames
    # the second block leans on the first: alone, it does not decompress
    second = encoder.encode(f.SynReply(5, {"streamtype": "data"}))
    with pytest.raises(f.SpdyProtocolError, match="does not decompress"):
        f.FrameDecoder().feed(second)


def test_names_are_sent_lower_case_and_upper_case_is_refused() -> None:
    assert f.unpack_headers(f.pack_headers({"StreamType": "data"})) == {"streamtype": "data"}
    block = b"\x00\x00\x00\x01\x00\x00\x00\x01A\x00\x00\x00\x00"
    with pytest.raises(f.SpdyProtocolError, match="not lower case"):
        f.unpack_headers(block)


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ("80020006 00000004 00000001", "version 2"),
        ("00000001 00ffffff", "16777215 bytes"),
        ("80030006 00000002 0000", "too short"),
        ("80030004 00000008 00000002 00000001", "SETTINGS says 2 entries"),
        ("80030002 00000006 00000001 ffff", "does not decompress"),
    ],
)
def test_malformed_frames_are_named(wire: str, reason: str) -> None:
    with pytest.raises(f.SpdyProtocolError, match=reason):
        f.FrameDecoder().feed(bytes.fromhex(wire.replace(" ", "")))


def test_unknown_control_frames_are_skipped() -> None:
    raw = bytes.fromhex("8003000a00000002abcd80030006000000040000000b")
    assert f.FrameDecoder().feed(raw) == [f.Ping(11)]


@given(st.binary(max_size=512), st.binary(max_size=64))
def test_decoder_parses_or_rejects(data: bytes, more: bytes) -> None:
    decoder = f.FrameDecoder()
    try:
        decoder.feed(data)
        decoder.feed(more)
    except f.SpdyProtocolError:
        pass


@given(st.dictionaries(st.text("abcdefgh-", min_size=1, max_size=8), st.text(max_size=20),
                       max_size=5), st.binary(max_size=300))  # fmt: skip
def test_round_trip(headers: dict[str, str], data: bytes) -> None:
    frames: list[f.Frame] = [f.SynStream(1, headers), f.DataFrame(1, data, fin=True)]
    encoder = f.FrameEncoder()
    assert f.FrameDecoder().feed(b"".join(encoder.encode(x) for x in frames)) == frames
