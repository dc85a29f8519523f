"""Parse it or reject it, never crash: every decoder and every router entry point."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings, strategies as st

from knemu.errors import MalformedPacket
from knemu.node_agent.dataplane.router import OUT_POD
from knemu.node_agent.kubeproxy.service_table import Backend
from knemu.proto import wire

from .._cluster import MAC1, MAC2, POD_A, POD_C, UNDERLAY2, VIP, Pair, pair, syn, valid, web

FUZZ = settings(
    max_examples=int(os.environ.get("KNEMU_FUZZ_EXAMPLES", "400")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@FUZZ
@given(st.binary(max_size=120))
def test_decoders_parse_or_reject(data: bytes) -> None:
    decoders = (
        wire.decode_ipv4,
        wire.decode_tcp,
        wire.decode_udp,
        wire.decode_icmp,
        wire.decode_ethernet,
        wire.decode_vxlan,
    )
    for decode in decoders:
        try:
            decode(data)
        except MalformedPacket as exc:
            assert exc.drop_reason
    assert wire.tcp_reset_for(data) is None or len(wire.tcp_reset_for(data) or b"") >= 40
    wire.icmp_error_for(data, 3, 3, "10.0.0.1")


def _mutations() -> st.SearchStrategy[bytes]:
    """Valid packets with a few bytes changed and/or cut: reaches deep paths."""
    bases = st.sampled_from(
        [
            syn(POD_A, VIP, 1234, 80),
            syn(POD_A, "10.244.2.7", 1234, 80),
            wire.udp_packet(POD_A, VIP, 5, 80, b"dns?"),
            wire.ip_packet(POD_A, "10.244.2.7", 1, wire.encode_icmp(wire.IcmpMessage(8, 0))),
        ]
    )

    def mutate(base: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
        buf = bytearray(base)
        for pos, val in edits:
            buf[pos % len(buf)] = val
        return bytes(buf[: max(0, len(buf) - cut)])

    edits = st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4)
    return st.builds(mutate, bases, edits, st.integers(0, 45))


def _router_pair() -> Pair:
    p = pair()
    p.set_service(*web([Backend(POD_A, 8080, True), Backend(POD_C, 8080, True)]))
    return p


@FUZZ
@given(st.one_of(st.binary(max_size=100), _mutations()))
def test_handle_pod_and_host_never_raise(packet: bytes) -> None:
    p = _router_pair()
    for out in (p.r1.handle_pod("a", packet, 1.0), p.r1.handle_host(packet, 1.0)):
        assert out is None or len(out[2]) >= 20


@FUZZ
@given(st.one_of(st.binary(max_size=100), _mutations()), st.binary(max_size=8))
def test_handle_underlay_never_raises(inner: bytes, header: bytes) -> None:
    p = _router_pair()
    eth = bytes.fromhex(MAC1.replace(":", "") + MAC2.replace(":", "") + "0800")
    for datagram in (wire.encode_vxlan(1, eth + inner), header + eth + inner, inner):
        out = p.r1.handle_underlay(datagram, (UNDERLAY2, 4789), 1.0)
        assert out is None or len(out[2]) >= 20


@FUZZ
@given(
    st.sampled_from(["TCP", "UDP", "UDP0"]),
    st.integers(1, 65535),
    st.integers(1, 65535),
    st.binary(max_size=64),
    st.booleans(),
)
def test_nat_round_trip_keeps_checksums_valid(
    proto: str, sport: int, target: int, payload: bytes, hairpin: bool
) -> None:
    """Incremental updates (RFC 1624) agree with a full recompute for any ports and payload."""
    p = pair()
    backend = POD_A if hairpin else POD_C
    p.set_service(*web([Backend(backend, target, True)], protocol=proto[:3], port=80))
    if proto == "TCP":
        pkt = wire.tcp_packet(POD_A, VIP, wire.TcpSegment(sport, 80, seq=9, payload=payload))
    else:
        pkt = wire.udp_packet(POD_A, VIP, sport, 80, payload, with_checksum=proto == "UDP")
    out = p.r1.handle_pod("a", pkt, 1.0)
    assert out is not None
    fwd = valid(out[2])
    assert fwd.dst == backend
    if proto == "TCP":
        seg = wire.TcpSegment(target, sport, seq=1, ack=10, flags=0x12, payload=payload)
        reply = wire.tcp_packet(backend, fwd.src, seg)
    else:
        reply = wire.udp_packet(backend, fwd.src, target, sport, payload, proto == "UDP")
    back = p.r1.handle_pod("a" if hairpin else "c", reply, 1.1)
    assert back is not None and back[:2] == (OUT_POD, "a")
    ip = valid(back[2])
    assert (ip.src, ip.dst) == (VIP, POD_A)
    assert ip.payload[:4] == (80).to_bytes(2, "big") + sport.to_bytes(2, "big")


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("pod"), st.sampled_from(["a", "c"]), _mutations()),
        st.tuples(st.just("host"), st.just(""), _mutations()),
        st.tuples(st.just("underlay"), st.just(""), _mutations()),
        st.tuples(st.just("expire"), st.just(""), st.just(b"")),
        st.tuples(st.just("svc"), st.sampled_from(["none", "one", "gone"]), st.just(b"")),
    ),
    max_size=25,
)


@FUZZ
@given(_OPS)
def test_sequences_of_packets_and_table_changes_never_raise(
    ops: list[tuple[str, str, bytes]],
) -> None:
    p = _router_pair()
    eth = bytes.fromhex(MAC1.replace(":", "") + MAC2.replace(":", "") + "0800")
    now = 1.0
    for kind, arg, packet in ops:
        now += 7.0
        if kind == "pod":
            p.r1.handle_pod(arg, packet, now)
        elif kind == "host":
            p.r1.handle_host(packet, now)
        elif kind == "underlay":
            p.r1.handle_underlay(wire.encode_vxlan(1, eth + packet), (UNDERLAY2, 1), now)
        elif kind == "expire":
            p.r1.expire(now)
        else:
            backends = {"none": [], "one": [Backend(POD_C, 8080, True)], "gone": None}[arg]
            if backends is None:
                p.r1.remove_service("default/web")
            else:
                p.set_service(*web(backends))
    stats = p.r1.statistics()
    assert all(v >= 0 for v in stats.values())
    assert stats["conntrack_entries"] == len(p.r1.table_snapshot()["conntrack"])
