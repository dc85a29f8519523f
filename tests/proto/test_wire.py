"""Wire codecs against independent references: RFC examples, hand-written hex, full recompute."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings, strategies as st

from knemu.errors import MalformedPacket
from knemu.proto import wire


def ref_checksum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 written the slow, obvious way (big-endian words, end-around carry)."""
    if len(data) % 2:
        data += b"\0"
    total = initial
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    for i in range(0, len(data), 2):
        total += data[i] * 256 + data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return 0xFFFF - total


def test_rfc1071_example() -> None:
    # RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2; the checksum is ~ddf2.
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert wire.checksum(data) == 0x220D == ref_checksum(data)


def test_ipv4_header_checksum_known_vector() -> None:
    # A classic IPv4 header (192.168.0.1 -> 192.168.0.199, UDP) whose checksum is b861.
    header = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert wire.checksum(header) == 0xB861
    with_sum = header[:10] + b"\xb8\x61" + header[12:]
    assert wire.checksum(with_sum) == 0


def test_rfc1624_example() -> None:
    # RFC 1624 section 4: HC 0xDD2F, m 0x5555 -> m' 0x3285 gives HC' 0x0000 with eqn. 3
    # (eqn. 2 of RFC 1141 would give the wrong 0xFFFF).
    delta = wire.word_delta(b"\x55\x55", b"\x32\x85")
    assert wire.checksum_adjust(0xDD2F, delta) == 0x0000


@given(st.binary(min_size=20, max_size=60).filter(lambda b: len(b) % 2 == 0), st.data())
@settings(max_examples=300, deadline=None, database=None)
def test_incremental_update_equals_full_recompute(data: bytes, draw: st.DataObject) -> None:
    start = draw.draw(st.integers(0, len(data) // 2 - 3)) * 2
    new = draw.draw(st.binary(min_size=6, max_size=6))
    old_sum = wire.checksum(data)
    changed = data[:start] + new + data[start + 6 :]
    incremental = wire.checksum_adjust(old_sum, wire.word_delta(data[start : start + 6], new))
    # 0x0000 and 0xFFFF are the two zeros of one's complement: compare what a receiver checks.
    full = ref_checksum(changed)
    assert incremental == full or {incremental, full} == {0, 0xFFFF}


@given(st.binary(max_size=300), st.integers(0, 0x3FFFF))
@settings(database=None)
def test_checksum_matches_reference(data: bytes, initial: int) -> None:
    assert wire.checksum(data, initial) == ref_checksum(data, initial)


def test_ip_tcp_round_trip_and_checksums() -> None:
    seg = wire.TcpSegment(40000, 80, seq=123, ack=0, flags=wire.TCP_SYN, payload=b"hi")
    pkt = wire.tcp_packet("10.244.1.5", "10.96.0.20", seg)
    ip = wire.decode_ipv4(pkt)
    assert (ip.src, ip.dst, ip.proto, ip.ttl) == ("10.244.1.5", "10.96.0.20", 6, 64)
    assert ref_checksum(pkt[:20]) == 0
    pseudo = bytes.fromhex("0af40105") + bytes.fromhex("0a600014") + bytes((0, 6, 0, 22))
    assert ref_checksum(pseudo + ip.payload) == 0
    back = wire.decode_tcp(ip.payload)
    assert (back.src_port, back.dst_port, back.seq, back.flags, back.payload) == (
        40000,
        80,
        123,
        wire.TCP_SYN,
        b"hi",
    )
    assert wire.transport_checksum_ok(pkt)


def test_udp_checksum_zero_means_none() -> None:
    pkt = wire.udp_packet("10.0.0.1", "10.0.0.2", 1, 2, b"x", with_checksum=False)
    assert pkt[26:28] == b"\0\0"
    assert wire.transport_checksum_ok(pkt)
    assert wire.decode_udp(wire.decode_ipv4(pkt).payload).payload == b"x"


def test_vxlan_hand_written_frame() -> None:
    # RFC 7348 section 5: flags 08, 24 reserved bits, VNI 0x000001, 8 reserved bits.
    inner = bytes.fromhex("0200000000020200000000010800") + b"IP"
    datagram = bytes.fromhex("0800000000000100") + inner
    assert wire.encode_vxlan(1, inner) == datagram
    assert wire.decode_vxlan(datagram) == (1, inner)
    frame = wire.decode_ethernet(inner)
    assert (wire.bytes_to_mac(frame.dst), frame.ethertype, frame.payload) == (
        "02:00:00:00:00:02",
        0x0800,
        b"IP",
    )
    assert wire.vxlan_header(0xABCDEF).hex() == "08000000abcdef00"


def test_vxlan_reserved_bits_ignored_but_i_flag_required() -> None:
    assert wire.decode_vxlan(bytes.fromhex("0cffffff00000aff"))[0] == 10
    with pytest.raises(MalformedPacket) as err:
        wire.decode_vxlan(bytes.fromhex("0000000000000100"))
    assert err.value.drop_reason == "bad_vxlan_header"


def test_decoder_errors_name_reasons() -> None:
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: wire.decode_ipv4(b"\x45" * 10), "truncated"),
        (lambda: wire.decode_ipv4(b"\x65" + bytes(19)), "not_ipv4"),
        (
            lambda: wire.decode_ipv4(bytes.fromhex("450000140000400040110000c0a80001c0a800c7")),
            "bad_checksum",
        ),
        (lambda: wire.decode_tcp(bytes(10)), "truncated"),
        (lambda: wire.decode_udp(bytes.fromhex("0001000200ff0000")), "truncated"),
        (lambda: wire.decode_icmp(bytes(4)), "truncated"),
        (lambda: wire.decode_ethernet(bytes(5)), "truncated"),
    ]
    for call, reason in cases:
        with pytest.raises(MalformedPacket) as err:
            call()
        assert err.value.drop_reason == reason


def test_tcp_reset_for_syn_and_for_ack() -> None:
    # RFC 9293 3.10.7.1: no ACK -> <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>;
    # ACK set -> <SEQ=SEG.ACK><CTL=RST>.
    syn = wire.tcp_packet("10.0.0.1", "10.96.0.5", wire.TcpSegment(1234, 80, seq=1000))
    rst = wire.tcp_reset_for(syn)
    assert rst is not None
    ip = wire.decode_ipv4(rst)
    seg = wire.decode_tcp(ip.payload)
    assert (ip.src, ip.dst, seg.src_port, seg.dst_port) == ("10.96.0.5", "10.0.0.1", 80, 1234)
    assert (seg.seq, seg.ack, seg.flags) == (0, 1001, wire.TCP_RST | wire.TCP_ACK)
    assert wire.transport_checksum_ok(rst)
    data = wire.TcpSegment(1234, 80, seq=5, ack=777, flags=wire.TCP_ACK, payload=b"abc")
    rst2 = wire.tcp_reset_for(wire.tcp_packet("10.0.0.1", "10.96.0.5", data))
    assert rst2 is not None
    seg2 = wire.decode_tcp(wire.decode_ipv4(rst2).payload)
    assert (seg2.seq, seg2.flags) == (777, wire.TCP_RST)
    reset = wire.TcpSegment(1, 2, flags=wire.TCP_RST)
    assert wire.tcp_reset_for(wire.tcp_packet("10.0.0.1", "10.0.0.2", reset)) is None


def test_icmp_port_unreachable_quotes_the_packet() -> None:
    udp = wire.udp_packet("10.244.1.5", "10.96.0.10", 5000, 53, b"q" * 1000)
    reply = wire.icmp_error_for(udp, 3, 3, "10.96.0.10")
    assert reply is not None
    ip = wire.decode_ipv4(reply)
    assert (ip.src, ip.dst, ip.proto) == ("10.96.0.10", "10.244.1.5", 1)
    assert len(reply) <= 576  # RFC 1812 4.3.2.3
    icmp = wire.decode_icmp(ip.payload)  # verifies the ICMP checksum
    assert (icmp.type, icmp.code) == (3, 3)
    assert icmp.payload == udp[: len(icmp.payload)] and len(icmp.payload) >= 28
    # never an ICMP error about an ICMP error (RFC 1122 3.2.2)
    assert wire.icmp_error_for(reply, 3, 3, "10.0.0.9") is None


def test_address_helpers_reject_garbage() -> None:
    for bad in ("10.0.0", "10.0.0.256", "a.b.c.d", "1.2.3.-1", ""):
        with pytest.raises(ValueError, match="not an IPv4"):
            wire.ip_to_bytes(bad)
    with pytest.raises(ValueError, match="not a MAC"):
        wire.mac_to_bytes("02:00:00")
    assert wire.bytes_to_ip(wire.ip_to_bytes("10.244.3.1")) == "10.244.3.1"


@given(st.binary(min_size=20, max_size=60))
def test_ipv4_header_checksum_matches_the_general_checksum(data: bytes) -> None:
    assert wire.ipv4_header_checksum(data) == wire.checksum(data[:20])
    assert wire.ipv4_header_checksum(data, 24) == wire.checksum(data[:24])
