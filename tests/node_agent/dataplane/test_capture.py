"""The pcap/pcapng writer and the capture filter, without a cluster (the taps that feed them:
tests/node_agent/kubelet/test_capture.py).

Files are checked three ways: byte layouts against the formats' documents, a round trip
through ``CaptureReader``, and, where Debian's ``tshark`` is installed (scripts/test installs
it), tshark's own decoding (VXLAN on port 4789, the inner TCP tuple, directions, drops).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from knemu.node_agent.dataplane.capture import (
    LINKTYPE_RAW,
    CaptureError,
    CaptureReader,
    CaptureSession,
    describe_packet,
    parse_filter,
    pcap_header,
    pcap_record,
)
from knemu.proto import wire

from .._packets import NODE_1, NODE_2, POD_A, POD_B, tcp, vxlan


def ones_complement_sum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


# -- formats ---------------------------------------------------------------------------------


def test_pcap_header_and_record_layout() -> None:
    # draft-ietf-opsawg-pcap section 4: magic, 2.4, reserved, snaplen, linktype (LINKTYPE_RAW).
    assert pcap_header(65535) == bytes.fromhex("d4c3b2a1020004000000000000000000ffff000065000000")
    record = pcap_record(1.5, b"\x45" + bytes(19), snaplen=65535)
    assert struct.unpack("<IIII", record[:16]) == (1, 500000, 20, 20)
    assert pcap_record(0.0, bytes(100), snaplen=64)[8:16] == struct.pack("<II", 64, 100)


def test_outer_header_is_valid_ipv4_udp_with_zero_udp_checksum() -> None:
    packet = vxlan(tcp())
    ip = wire.decode_ipv4(packet)  # verifies the header checksum
    assert (ip.src, ip.dst, ip.proto, ip.ttl) == (NODE_1[0], NODE_2[0], 17, 64)
    assert ones_complement_sum(packet[:20]) == 0xFFFF
    sport, dport, length, checksum = struct.unpack("!HHHH", packet[20:28])
    assert (sport, dport, length, checksum) == (4789, 4789, len(packet) - 20, 0)
    assert wire.decode_vxlan(packet[28:])[0] == 1


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_session_round_trip_keeps_time_data_and_direction(fmt: str) -> None:
    session = CaptureSession(fmt, wall_offset=1000.0)
    session.offer(tcp(), 1.25, True)
    session.offer(tcp(POD_B, POD_A, 80, 40000), 2.5, False)
    reader = CaptureReader()
    reader.feed(session.header() + session.take() + session.trailer(3.0))
    assert reader.summary.fmt == fmt and reader.summary.packets == 2
    (t1, d1, o1), (t2, d2, o2) = reader.packets
    assert (t1, t2) == (1001.25, 1002.5)
    assert d1 == tcp() and d2 == tcp(POD_B, POD_A, 80, 40000)
    assert (o1, o2) == ((True, False) if fmt == "pcapng" else (None, None))
    assert reader.summary.dropped == (0 if fmt == "pcapng" else None)


def test_reader_accepts_the_stream_in_any_split() -> None:
    session = CaptureSession("pcapng")
    for i in range(5):
        session.offer(tcp(sport=40000 + i), float(i), True)
    data = session.header() + session.take() + session.trailer(9.0)
    reader = CaptureReader()
    for i in range(0, len(data), 7):
        reader.feed(data[i : i + 7])
    assert [
        wire.decode_tcp(wire.decode_ipv4(d).payload).src_port for _, d, _ in reader.packets
    ] == [40000 + i for i in range(5)]


def test_reader_rejects_what_is_not_a_capture() -> None:
    with pytest.raises(CaptureError, match="not a pcap or pcapng"):
        CaptureReader().feed(b"HTTP/1.1 500 Internal Server Error\r\n\r\n")


@given(
    st.lists(st.binary(min_size=1, max_size=300), max_size=20), st.sampled_from(["pcap", "pcapng"])
)
@settings(max_examples=60, deadline=None)
def test_any_packets_round_trip(packets: list[bytes], fmt: str) -> None:
    session = CaptureSession(fmt)
    for i, p in enumerate(packets):
        session.offer(p, float(i), i % 2 == 0)
    reader = CaptureReader()
    reader.feed(session.header() + session.take() + session.trailer(99.0))
    assert [d for _, d, _ in reader.packets] == packets


# -- bounds ----------------------------------------------------------------------------------


def test_count_ends_the_session_and_later_packets_are_ignored() -> None:
    session = CaptureSession("pcap", count=2)
    for i in range(5):
        session.offer(tcp(sport=1000 + i), float(i))
    assert session.done
    assert session.statistics().captured == 2


def test_a_slow_reader_loses_packets_and_they_are_counted() -> None:
    wakeups: list[int] = []
    session = CaptureSession("pcapng", buffer_bytes=1000, on_data=lambda: wakeups.append(1))
    for i in range(50):
        session.offer(tcp(sport=1000 + i), float(i), True)
    stats = session.statistics()
    assert stats.captured + stats.dropped == 50 and stats.dropped > 0
    assert wakeups == [1], "the reader is woken once, when the queue stops being empty"
    reader = CaptureReader()
    reader.feed(session.header() + session.take() + session.trailer(60.0))
    assert reader.summary.packets == stats.captured
    assert reader.summary.dropped == stats.dropped


def test_bad_requests_name_what_is_wrong() -> None:
    with pytest.raises(CaptureError, match="format 'cap'"):
        CaptureSession("cap")
    with pytest.raises(CaptureError, match="count 0"):
        CaptureSession(count=0)
    with pytest.raises(CaptureError, match="snaplen 10"):
        CaptureSession(snaplen=10)


# -- the filter ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "packet", "expected"),
    [
        ("tcp", tcp(), True),
        ("udp", tcp(), False),
        ("not udp", tcp(), True),
        ("port 80", tcp(), True),
        ("port 81", tcp(), False),
        ("host 10.244.2.7", tcp(), True),
        ("src 10.244.2.7", tcp(), False),
        ("dst host 10.244.2.7 and tcp", tcp(), True),
        ("tcp && !port 80", tcp(), False),
        # on the underlay a primitive matches the outer or the inner packet
        ("vxlan and host 10.244.1.5", vxlan(tcp()), True),
        ("tcp and port 80", vxlan(tcp()), True),
        ("host 192.168.59.12", vxlan(tcp()), True),
        ("host 10.244.9.9", vxlan(tcp()), False),
        ("not icmp", b"\x60" + bytes(39), False),  # not IPv4: never matches
    ],
)
def test_filter(expr: str, packet: bytes, expected: bool) -> None:
    match = parse_filter(expr)
    assert match is not None and match(packet) is expected


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("tcpp", "unknown word 'tcpp'"),
        ("port", "'port' needs a value"),
        ("port http", "not a port number"),
        ("host 10.0.0", "not an IPv4 address"),
        ("tcp or udp", "expected 'and' before 'or'"),
        ("tcp and", "'and' needs a second"),
        ("not", "'not' needs something"),
    ],
)
def test_filter_errors(expr: str, message: str) -> None:
    with pytest.raises(CaptureError, match=message):
        parse_filter(expr)


@given(st.binary(max_size=120))
@settings(max_examples=200, deadline=None)
def test_filter_never_raises_on_any_bytes(data: bytes) -> None:
    match = parse_filter("tcp and host 10.244.1.5 and port 80 and not vxlan")
    assert match is not None
    match(data)
    describe_packet(data)


def test_describe_packet_shows_outer_vni_and_inner() -> None:
    line = describe_packet(vxlan(tcp()))
    assert line.startswith("UDP 192.168.59.11:4789 > 192.168.59.12:4789")
    assert line.endswith("VXLAN vni 1: TCP 10.244.1.5:40000 > 10.244.2.7:80")


# -- tshark ------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("tshark") is None, reason="Debian's tshark is not installed "
                    "(scripts/test installs it)")  # fmt: skip
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_tshark_decodes_vxlan_and_the_inner_flow(fmt: str, tmp_path: Path) -> None:
    session = CaptureSession(fmt, buffer_bytes=300, wall_offset=1_700_000_000.0)
    session.offer(vxlan(tcp()), 1.0, True)
    session.offer(vxlan(tcp(POD_B, POD_A, 80, 40000), NODE_2, NODE_1), 1.1, False)
    for _ in range(5):
        session.offer(vxlan(tcp()), 1.2, True)  # beyond the buffer: dropped
    path = tmp_path / f"c.{fmt}"
    path.write_bytes(session.header() + session.take() + session.trailer(2.0))
    fields = ["vxlan.vni", "ip.src", "ip.dst", "tcp.srcport", "tcp.dstport"]
    out = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", *[a for f in fields for a in ("-e", f)]],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    rows = [line.split("\t") for line in out.splitlines()]
    assert rows == [
        ["1", "192.168.59.11,10.244.1.5", "192.168.59.12,10.244.2.7", "40000", "80"],
        ["1", "192.168.59.12,10.244.2.7", "192.168.59.11,10.244.1.5", "80", "40000"],
    ]
    assert LINKTYPE_RAW == 101
    if fmt == "pcapng":
        info = subprocess.run(["capinfos", str(path)], capture_output=True, text=True,
                              check=False, timeout=60).stdout  # fmt: skip
        assert "Number of packets:   2" in info or "Number of packets = 2" in info, info
