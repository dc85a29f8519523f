"""Routing, VXLAN encap/decap and every drop reason."""

from __future__ import annotations

import dataclasses
import json

import pytest

from knemu.errors import ConfigError
from knemu.node_agent.dataplane.router import OUT_HOST, OUT_POD, OUT_UNDERLAY, Router
from knemu.node_agent.events import FlowDropped, FlowForwarded
from knemu.proto import wire

from .._cluster import (
    MAC1,
    MAC2,
    POD_A,
    POD_B,
    POD_C,
    UNDERLAY1,
    UNDERLAY2,
    node,
    pair,
    syn,
    valid,
)


def test_same_node_delivery_decrements_ttl() -> None:
    p = pair()
    pkt = syn(POD_A, POD_C, 1111, 80)
    out = p.r1.handle_pod("a", pkt, 1.0)
    assert out is not None and out[:2] == (OUT_POD, "c")
    ip = valid(out[2])
    assert ip.ttl == 63 and bytes(out[2])[20:] == pkt[20:]
    assert p.r1.statistics()["delivered"] == 1


def test_encap_matches_hand_written_vxlan_frame() -> None:
    p = pair()
    pkt = syn(POD_A, POD_B, 1111, 80)
    out = p.r1.handle_pod("a", pkt, 1.0)
    assert out is not None and out[0] == OUT_UNDERLAY and out[1] == (UNDERLAY2, 4789)
    forwarded = bytearray(pkt)
    forwarded[8] -= 1  # TTL 64 -> 63
    forwarded[10:12] = b"\0\0"
    forwarded[10:12] = wire.checksum(bytes(forwarded[:20])).to_bytes(2, "big")
    expected = (
        bytes.fromhex("0800000000000100")  # VXLAN: I flag, VNI 1 (RFC 7348 section 5)
        + bytes.fromhex(MAC2.replace(":", "") + MAC1.replace(":", "") + "0800")
        + bytes(forwarded)
    )
    assert bytes(out[2]) == expected


def test_decap_delivers_and_counts() -> None:
    p = pair()
    out = p.underlay(p.r1.handle_pod("a", syn(POD_A, POD_B, 1111, 80), 1.0), 1.0)
    assert out is not None and out[:2] == (OUT_POD, "b")
    assert valid(out[2]).ttl == 62  # two router hops, as with a real overlay
    s1, s2 = p.r1.statistics(), p.r2.statistics()
    assert (s1["encapsulated"], s2["decapsulated"], s2["delivered"]) == (1, 1, 1)
    kinds = [(type(e).__name__, e.point) for e in p.events]
    assert kinds == [("FlowForwarded", "encap"), ("FlowForwarded", "to-pod")]
    first = p.events[0]
    assert isinstance(first, FlowForwarded) and first.outer is not None
    assert (first.outer.dst_ip, first.outer.vni) == (UNDERLAY2, 1)


def test_host_gateway_and_outside_go_to_host() -> None:
    p = pair()
    out = p.r1.handle_pod("a", syn(POD_A, "10.244.1.1", 1, 22), 1.0)
    assert out is not None and out[0] == OUT_HOST and valid(out[2]).ttl == 64
    out = p.r1.handle_pod("a", syn(POD_A, UNDERLAY2, 1, 10250), 1.0)
    assert out is not None and out[0] == OUT_HOST
    # the node's own kernel reaching a pod: no TTL change, it already routed the packet
    out = p.r1.handle_host(syn("10.244.1.1", POD_A, 2, 80), 1.0)
    assert out is not None and out[:2] == (OUT_POD, "a") and valid(out[2]).ttl == 64
    out = p.r1.handle_host(syn("10.244.1.1", POD_B, 2, 80), 1.0)
    assert out is not None and out[0] == OUT_UNDERLAY


def test_ttl_exceeded_answers_icmp_from_gateway() -> None:
    p = pair()
    pkt = wire.tcp_packet(POD_A, POD_B, wire.TcpSegment(1, 2), ttl=1)
    out = p.r1.handle_pod("a", pkt, 1.0)
    assert out is not None and out[:2] == (OUT_POD, "a")
    ip = valid(out[2])
    icmp = wire.decode_icmp(ip.payload)
    assert (ip.src, ip.dst, icmp.type, icmp.code) == ("10.244.1.1", POD_A, 11, 0)
    assert p.r1.statistics()["refused_ttl_exceeded"] == 1


def test_too_big_for_the_overlay_gets_frag_needed() -> None:
    p = pair()
    big = wire.udp_packet("10.244.1.1", POD_B, 1, 2, bytes(1500))
    out = p.r1.handle_host(big, 1.0)
    assert out is not None and out[0] == OUT_HOST
    icmp = wire.decode_icmp(valid(out[2]).payload)
    assert (icmp.type, icmp.code, icmp.rest) == (3, 4, b"\0\0" + (1450).to_bytes(2, "big"))


def _vx(
    p_inner: bytes, header: str = "0800000000000100", dst_mac: str = MAC1, ethertype: str = "0800"
) -> bytes:
    eth = bytes.fromhex(dst_mac.replace(":", "") + MAC2.replace(":", "") + ethertype)
    return bytes.fromhex(header) + eth + p_inner


@pytest.mark.parametrize(
    ("datagram", "src", "reason"),
    [
        (_vx(syn(POD_B, POD_A, 1, 2), header="0000000000000100"), UNDERLAY2, "bad_vxlan_header"),
        (_vx(syn(POD_B, POD_A, 1, 2), header="0800000000000200"), UNDERLAY2, "wrong_vni"),
        (_vx(syn(POD_B, POD_A, 1, 2)), "192.168.59.99", "unknown_peer"),
        (_vx(syn(POD_B, POD_A, 1, 2), dst_mac="02:00:00:00:00:77"), UNDERLAY2, "wrong_mac"),
        (_vx(syn(POD_B, POD_A, 1, 2), ethertype="86dd"), UNDERLAY2, "not_ipv4"),
        (_vx(syn(POD_B, POD_A, 1, 2))[:30], UNDERLAY2, "truncated"),
        (_vx(syn(POD_B, POD_A, 1, 2)[:30]), UNDERLAY2, "truncated"),
        (
            _vx(
                b"\x45\x00\x00\x28"
                + syn(POD_B, POD_A, 1, 2)[4:10]
                + b"\0\0"
                + syn(POD_B, POD_A, 1, 2)[12:]
            ),
            UNDERLAY2,
            "bad_checksum",
        ),
        (_vx(syn(POD_B, "10.244.1.77", 1, 2)), UNDERLAY2, "unknown_pod"),
        (_vx(syn(POD_B, "10.244.9.9", 1, 2)), UNDERLAY2, "no_route"),
    ],
)
def test_underlay_drop_reasons(datagram: bytes, src: str, reason: str) -> None:
    p = pair()
    assert p.r1.handle_underlay(datagram, (src, 4789), 1.0) is None
    stats = p.r1.statistics()
    assert stats["drop_" + reason] == 1
    assert stats["delivered"] == 0
    dropped = [e for e in p.events if isinstance(e, FlowDropped)]
    assert [e.reason for e in dropped] == [reason]


def test_vxlan_reserved_bits_are_ignored_on_receipt() -> None:
    p = pair()
    out = p.r1.handle_underlay(
        _vx(syn(POD_B, POD_A, 1, 2), header="0cffffff000001ff"), (UNDERLAY2, 1), 1.0
    )
    assert out is not None and out[:2] == (OUT_POD, "a")


def test_pod_drop_reasons() -> None:
    p = pair()
    assert p.r1.handle_pod("zz", syn(POD_A, POD_B, 1, 2), 1.0) is None
    assert p.r1.handle_pod("a", syn(POD_C, POD_B, 1, 2), 1.0) is None  # spoofed source
    assert p.r1.handle_pod("a", b"\x60" + bytes(39), 1.0) is None  # IPv6
    assert p.r1.handle_pod("a", b"\x45\x00", 1.0) is None
    assert p.r1.handle_pod("a", syn(POD_A, POD_B, 1, 2)[:30], 1.0) is None  # total > length
    assert p.r1.handle_host(syn("10.244.1.1", "8.8.8.8", 1, 2), 1.0) is None  # loop guard
    stats = p.r1.statistics()
    for reason in ("unknown_port", "spoofed_source", "not_ipv4", "no_route"):
        assert stats["drop_" + reason] == 1, reason
    assert stats["drop_truncated"] == 2


def test_peer_changes_and_bad_table_input() -> None:
    p = pair()
    p.r1.remove_peer("node-2")
    assert p.r1.handle_pod("a", syn(POD_A, POD_B, 1, 2), 1.0) is None
    assert p.r1.statistics()["drop_no_route"] == 1
    p.r1.set_peer("node-2", "10.244.2.0/24", "192.168.59.50", MAC2, vxlan_port=8472)
    out = p.r1.handle_pod("a", syn(POD_A, POD_B, 1, 2), 1.0)
    assert out is not None and out[1] == ("192.168.59.50", 8472)
    with pytest.raises(ConfigError, match="peer node-3"):
        p.r1.set_peer("node-3", "10.244.3.0/25", "192.168.59.13", MAC2)
    with pytest.raises(ConfigError, match="never its own peer"):
        p.r1.set_peer("node-9", "10.244.1.0/24", "192.168.59.19", MAC2)
    with pytest.raises(ConfigError, match=r"node-3.*MAC"):
        p.r1.set_peer("node-3", "10.244.3.0/24", "192.168.59.13", "zz")
    p.r1.remove_local_pod(POD_C)
    assert p.r1.handle_pod("a", syn(POD_A, POD_C, 1, 2), 1.0) is None
    assert p.r1.statistics()["drop_unknown_pod"] == 1


def test_snapshot_is_json() -> None:
    p = pair()
    snap = p.r1.table_snapshot()
    text = json.dumps(snap)
    assert "node-2" in text and snap["local_pods"][POD_A] == "a"
    assert snap["peers"][0]["underlay_ip"] == UNDERLAY2 and UNDERLAY1 not in text


def test_local_pod_remapping() -> None:
    p = pair()
    p.r1.add_local_pod("10.244.1.9", "a")  # pod "a" got a new IP: the old one is gone
    assert p.r1.handle_pod("a", syn(POD_A, POD_C, 1, 2), 1.0) is None
    assert p.r1.statistics()["drop_spoofed_source"] == 1
    out = p.r1.handle_pod("c", syn(POD_C, "10.244.1.9", 1, 2), 1.0)
    assert out is not None and out[:2] == (OUT_POD, "a")
    with pytest.raises(ConfigError, match="pod's IPv4"):
        p.r1.add_local_pod("10.244.1", "x")
    with pytest.raises(ConfigError, match="pod's IPv4"):
        p.r1.remove_local_pod("nope")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"vtep_mac": "zz"}, "not a MAC"),
        ({"gateway_ip": "10.244.1"}, "not an IPv4"),
        ({"pod_cidr": "10.244.0.0/23"}, "/24"),
        ({"service_cidr": "nope"}, "service_cidr"),
        ({"vni": 1 << 24}, "24 bits"),
        ({"mtu": 100}, "mtu 100"),
    ],
)
def test_bad_node_settings_are_config_errors(change: dict[str, object], message: str) -> None:
    bad = dataclasses.replace(node(1), **change)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="node-1") as err:
        Router(bad)
    assert message in err.value.message
