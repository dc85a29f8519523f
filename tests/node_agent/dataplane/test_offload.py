"""The TSO/GRO core: virtio-net headers, segmentation, coalescing (``dataplane.offload``)."""

from __future__ import annotations

import struct

from hypothesis import given, settings, strategies as st

from knemu.node_agent.dataplane import offload
from knemu.proto.wire import checksum, ipv4_header_checksum

ACK, PSH, FIN, SYN, CWR = 0x10, 0x08, 0x01, 0x02, 0x80


def tcp_packet(
    payload: bytes,
    *,
    seq: int = 1000,
    flags: int = ACK,
    options: bytes = b"",
    ident: int = 7,
    src: bytes = b"\x0a\xf4\x01\x02",
    dst: bytes = b"\x0a\xf4\x02\x02",
    complete: bool = True,
) -> bytes:
    """IPv4/TCP with a valid IP checksum; TCP checksum complete, or the pseudo-header sum
    (what a NEEDS_CSUM sender leaves)."""
    thl = 20 + len(options)
    total = 20 + thl + len(payload)
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ident, 0x4000, 64, 6, 0, src, dst))
    ip[10:12] = ipv4_header_checksum(ip).to_bytes(2, "big")
    tcp = bytearray(struct.pack("!HHIIBBHHH", 40000, 5201, seq, 99, (thl // 4) << 4, flags,
                                 502, 0, 0))  # fmt: skip
    tcp += options
    pseudo = src + dst + struct.pack("!BBH", 0, 6, thl + len(payload))
    if complete:
        tcp[16:18] = checksum(pseudo + tcp + payload).to_bytes(2, "big")
    else:
        folded = (~checksum(pseudo)) & 0xFFFF
        tcp[16:18] = folded.to_bytes(2, "big")
    return bytes(ip + tcp + payload)


def valid(segment: bytes | bytearray) -> bool:
    return ipv4_header_checksum(segment) == 0 and offload.tcp4_checksum_ok(segment, 20)


payloads = st.binary(min_size=1, max_size=9000)
mss_values = st.integers(min_value=1, max_value=1410)
option_sets = st.sampled_from([b"", b"\x01\x01\x08\x0a" + bytes(range(8))])
flag_sets = st.sampled_from([ACK, ACK | PSH, ACK | FIN, ACK | PSH | FIN])


@settings(max_examples=150, deadline=None)
@given(payloads, mss_values, option_sets, flag_sets, st.integers(0, 2**32 - 1))
def test_segments_are_whole_valid_packets_and_coalesce_back(
    payload: bytes, mss: int, options: bytes, flags: int, seq: int
) -> None:
    packet = tcp_packet(payload, seq=seq, flags=flags, options=options, complete=False)
    hl = 40 + len(options)
    segments = offload.segment_tcp4(packet, mss)
    assert len(segments) == -(-len(payload) // mss)
    assert b"".join(bytes(s[hl:]) for s in segments) == payload
    next_seq = seq
    for i, s in enumerate(segments):
        assert valid(s)
        assert len(s) <= hl + mss and int.from_bytes(s[2:4], "big") == len(s)
        assert int.from_bytes(s[4:6], "big") == 7 + i  # IP IDs count up
        assert int.from_bytes(s[24:28], "big") == next_seq
        next_seq = (next_seq + len(s) - hl) & 0xFFFFFFFF
        last = i == len(segments) - 1
        assert s[33] == (flags if last else flags & ~(PSH | FIN))
        assert s[40:hl] == options
    merged = offload.coalesce([bytes(s) for s in segments])
    assert len(merged) == 1, "one flow, in order, same headers: one super-packet"
    out, gso_size = merged[0]
    assert gso_size == (mss if len(segments) > 1 else 0)
    assert out[hl:] == payload
    assert ipv4_header_checksum(out) == 0
    # identity: the merged packet cuts into the same segments again
    again = offload.segment_tcp4(out, gso_size)
    assert [bytes(s) for s in again] == [bytes(s) for s in segments]


@given(payloads, mss_values)
def test_prefix_goes_in_front_of_every_segment(payload: bytes, mss: int) -> None:
    packet = tcp_packet(payload, complete=False)
    prefix = b"\x08\x00\x00\x00\x00\x00\x01\x00" + bytes(range(14))
    plain = offload.segment_tcp4(packet, mss)
    prefixed = offload.segment_tcp4(packet, mss, prefix)
    assert [bytes(p) for p in prefixed] == [prefix + bytes(s) for s in plain]


def test_cwr_only_on_the_first_segment() -> None:
    segments = offload.segment_tcp4(tcp_packet(bytes(3000), flags=ACK | CWR | PSH), 1000)
    assert [s[33] for s in segments] == [ACK | CWR, ACK, ACK | PSH]


def test_a_corrupt_segment_is_never_merged() -> None:
    segments = [bytes(s) for s in offload.segment_tcp4(tcp_packet(bytes(5000)), 1000)]
    bad = bytearray(segments[2])
    bad[-1] ^= 0xFF
    segments[2] = bytes(bad)
    # the run's segments are passed on as they came, for the pod's kernel to drop the bad one
    assert offload.coalesce(segments) == [(s, 0) for s in segments]


def test_gaps_flows_and_control_segments_end_runs() -> None:
    a = [bytes(s) for s in offload.segment_tcp4(tcp_packet(bytes(3000)), 1000)]
    other = tcp_packet(bytes(1000), src=b"\x0a\xf4\x01\x03")
    syn = tcp_packet(b"", flags=SYN, seq=5)
    # a missing segment (a[1]) splits the run; a SYN never merges; order is kept
    merged = offload.coalesce([a[0], other, a[2], syn])
    assert merged == [(a[0], 0), (other, 0), (a[2], 0), (syn, 0)]
    # a FIN closes its run: what follows starts a new one
    fin = [bytes(s) for s in offload.segment_tcp4(tcp_packet(bytes(2000), flags=ACK | FIN), 1000)]
    assert [g for _, g in offload.coalesce(fin)] == [1000]
    # a short segment in the middle ends the run
    short = [bytes(s) for s in offload.segment_tcp4(tcp_packet(bytes(1500)), 1000)]
    after = tcp_packet(bytes(1000), seq=2500, ident=9)
    assert [g for _, g in offload.coalesce([*short, after])] == [1000, 0]


@given(st.binary(max_size=200))
def test_coalesce_never_raises_and_passes_junk_on_unchanged(data: bytes) -> None:
    batch = [data, data[:40], data[::-1]]
    assert offload.coalesce(batch) == [(p, 0) for p in batch]


def test_complete_checksum_finishes_a_needs_csum_packet() -> None:
    partial = tcp_packet(b"hello world", complete=False)
    assert not offload.tcp4_checksum_ok(partial, 20)
    done = offload.complete_checksum(partial, 20, 16)
    assert done == tcp_packet(b"hello world")
    assert offload.complete_checksum(partial, 60, 16) is None


def test_vnet_header_round_trip_and_tcp4_fields() -> None:
    packet = tcp_packet(bytes(100), options=bytes(12))
    header = offload.tcp4_header(packet, 1398)
    parsed = offload.parse_vnet(header + packet)
    assert parsed is not None
    hdr, body = parsed
    assert body == packet
    # virtio 1.x 5.1.6: NEEDS_CSUM, TCPV4, headers 20+32, checksum at 20+16
    assert hdr == offload.VnetHeader(offload.F_NEEDS_CSUM, offload.GSO_TCPV4, 52, 1398, 20, 16)
    assert offload.build_vnet(hdr) == header
    assert offload.parse_vnet(b"\x00" * 9) is None


def test_interleaved_flows_each_merge() -> None:
    a = [bytes(s) for s in offload.segment_tcp4(tcp_packet(bytes(2000)), 1000)]
    b = [
        bytes(s)
        for s in offload.segment_tcp4(tcp_packet(bytes(2000), src=b"\x0a\xf4\x01\x03"), 1000)
    ]
    merged = offload.coalesce([a[0], b[0], a[1], b[1]])
    assert [(p[40:], g) for p, g in merged] == [(bytes(2000), 1000), (bytes(2000), 1000)]
    assert merged[1][0][12:16] == b"\x0a\xf4\x01\x03"


@settings(max_examples=150, deadline=None)
@given(st.integers(2, 6), st.data())
def test_no_corruption_hides_in_a_merged_packet(count: int, data: st.DataObject) -> None:
    mss = data.draw(st.sampled_from([1000, 999]))  # even: summed at once; odd: one by one
    segments = [bytes(s) for s in offload.segment_tcp4(tcp_packet(bytes(mss * count)), mss)]
    which = data.draw(st.integers(0, count - 1))
    at = data.draw(st.integers(20, len(segments[which]) - 1))
    flip = data.draw(st.integers(1, 255))
    bad = bytearray(segments[which])
    bad[at] ^= flip
    batch = [*segments[:which], bytes(bad), *segments[which + 1 :]]
    for packet, gso_size in offload.coalesce(batch):
        if gso_size:  # whatever merged must be exactly the good segments
            assert all(bytes(s) in segments for s in offload.segment_tcp4(packet, gso_size))
