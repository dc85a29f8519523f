"""The VXLAN backend's RFC 7348 details: per-flow outer source ports, and inner checksums a
CHECKSUM_PARTIAL sender (Linux with offloads) leaves for the receiver to complete."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from knemu.config import AgentConfig
from knemu.errors import ConfigError
from knemu.node_agent.dataplane import backends
from knemu.node_agent.dataplane.backends.vxlan import VxlanBackend, complete_partial_checksum
from knemu.node_agent.dataplane.router import OUT_POD, OUT_UNDERLAY, Router
from knemu.proto import wire

from ..._cluster import MAC1, MAC2, POD_A, POD_B, UNDERLAY1, UNDERLAY2, node

PEER = backends.PeerAddress(UNDERLAY2, MAC2, 4789)


def partial(packet: bytes) -> bytes:
    """``packet`` as a Linux sender with checksum offload leaves it: the transport checksum
    field holds the folded pseudo-header sum (csum_tcpudp_magic's complement)."""
    ihl = (packet[0] & 0x0F) << 2
    at = ihl + (16 if packet[9] == 6 else 6)
    total = packet[2] << 8 | packet[3]
    s = wire.pseudo_header_sum(packet[12:16], packet[16:20], packet[9], total - ihl)
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return packet[:at] + s.to_bytes(2, "big") + packet[at + 2 :]


def tcp(payload: bytes, sport: int = 40000) -> bytes:
    return wire.tcp_packet(POD_B, POD_A, wire.TcpSegment(sport, 80, 1, 2, 0x18, 512, payload))


@given(st.binary(max_size=1400), st.sampled_from(["tcp", "udp"]))
def test_partial_checksums_are_completed_to_what_a_full_checksum_is(
    payload: bytes, kind: str
) -> None:
    whole = tcp(payload) if kind == "tcp" else wire.udp_packet(POD_B, POD_A, 5000, 53, payload)
    assert wire.transport_checksum_ok(whole)
    half = partial(whole)
    if half != whole:  # 1 in 65535: the full checksum equals the pseudo-header sum
        assert not wire.transport_checksum_ok(half)
        assert complete_partial_checksum(half) == whole
    fixed = complete_partial_checksum(whole)
    assert fixed is None or fixed == whole  # a complete checksum is never changed


def test_udp_without_checksum_and_fragments_are_left_alone() -> None:
    none = wire.encode_udp(wire.UdpDatagram(5000, 53, b"x"), POD_B, POD_A, with_checksum=False)
    assert complete_partial_checksum(wire.ip_packet(POD_B, POD_A, 17, none)) is None
    half = bytearray(partial(tcp(b"data")))
    half[6] |= 0x20  # MF: a first fragment's checksum covers the whole datagram
    assert complete_partial_checksum(bytes(half)) is None
    assert complete_partial_checksum(b"\x45" + bytes(10)) is None


def test_the_router_delivers_completed_packets_and_counts_them() -> None:
    r1 = Router(node(1))
    r1.add_local_pod(POD_A, "a")
    r1.set_peer("node-2", "10.244.2.0/24", UNDERLAY2, MAC2)
    sender = backends.create("vxlan", vni=1, vtep_mac=MAC2)
    whole = tcp(b"bulk" * 300)
    datagram, _ = sender.encapsulate(partial(whole), backends.PeerAddress(UNDERLAY1, MAC1))
    out = r1.handle_underlay(datagram, (UNDERLAY2, 4789), 0.0)
    assert out is not None and out[:2] == (OUT_POD, "a")
    assert wire.transport_checksum_ok(bytes(out[2]))
    assert r1.statistics()["inner_checksum_completed"] == 1
    datagram, _ = sender.encapsulate(whole, backends.PeerAddress(UNDERLAY1, MAC1))
    r1.handle_underlay(datagram, (UNDERLAY2, 4789), 0.0)
    assert r1.statistics()["inner_checksum_completed"] == 1  # a complete one is not counted


def test_source_port_is_per_flow_in_the_dynamic_range() -> None:
    b = VxlanBackend(1, MAC1)
    ports = set()
    for sport in range(40000, 40064):
        first, _ = b.encapsulate(tcp(b"a", sport), PEER)
        again, _ = b.encapsulate(tcp(b"other payload", sport), PEER)
        assert b.source_port(first) == b.source_port(again)  # stable for the flow
        ports.add(b.source_port(first))
    assert all(49152 <= p <= 65535 for p in ports)
    assert len(ports) > 50  # flows spread (64 flows, 16384 ports)


def test_fragments_of_a_datagram_hash_alike() -> None:
    b = VxlanBackend(1, MAC1)
    first = bytearray(wire.udp_packet(POD_B, POD_A, 5000, 53, b"x" * 64))
    first[6] = 0x20  # MF
    later = bytearray(first)
    later[6], later[7] = 0x00, 0x10  # offset 128: no ports there
    later[28:32] = b"\xff\xff\xff\xff"  # payload bytes where ports would be
    a, _ = b.encapsulate(bytes(first), PEER)
    c, _ = b.encapsulate(bytes(later), PEER)
    assert b.source_port(a) == b.source_port(c)


def test_source_port_range_and_df_are_configurable_and_checked() -> None:
    b = VxlanBackend(1, MAC1, source_ports=(4789, 4789), df="set")
    assert b.source_port(b.encapsulate(tcp(b"a"), PEER)[0]) == 4789 and b.df == "set"
    assert AgentConfig(vxlan_source_ports="50000-50010").vxlan_source_port_range == (50000, 50010)
    assert AgentConfig(vxlan_source_ports="4789").vxlan_source_port_range == (4789, 4789)
    for bad in ("65535-1", "0-5", "a-b", "70000"):
        with pytest.raises(ConfigError, match="vxlan_source_ports"):
            AgentConfig(vxlan_source_ports=bad).validate()
    with pytest.raises(ConfigError, match="vxlan_df"):
        AgentConfig(vxlan_df="inherit").validate()
    with pytest.raises(ValueError, match="source port range"):
        VxlanBackend(1, MAC1, source_ports=(0, 10))


def arp_request(target: str, sender_mac: bytes = bytes.fromhex("020000000002")) -> bytes:
    """A VXLAN payload from node-2's VTEP: who has ``target``? tell 10.244.2.0 (RFC 826)."""
    arp = (bytes.fromhex("0001080006040001") + sender_mac + wire.ip_to_bytes("10.244.2.0")
           + bytes(6) + wire.ip_to_bytes(target))  # fmt: skip
    return wire.vxlan_header(1) + b"\xff" * 6 + sender_mac + b"\x08\x06" + arp


def test_the_vtep_answers_arp_for_its_own_address_to_known_peers() -> None:
    r1 = Router(node(1))
    r1.set_peer("node-2", "10.244.2.0/24", UNDERLAY2, MAC2)
    out = r1.handle_underlay(arp_request("10.244.1.0"), (UNDERLAY2, 51234), 0.0)
    assert out is not None and out[:2] == (OUT_UNDERLAY, (UNDERLAY2, 4789))  # its VXLAN port
    reply = bytes(out[2])
    me, asker = wire.mac_to_bytes(MAC1), bytes.fromhex("020000000002")
    assert reply[:8] == wire.vxlan_header(1)
    assert reply[8:22] == asker + me + b"\x08\x06"
    assert reply[22:30] == bytes.fromhex("0001080006040002")  # a reply
    assert reply[30:50] == me + wire.ip_to_bytes("10.244.1.0") + asker + wire.ip_to_bytes(
        "10.244.2.0"
    )
    assert r1.statistics()["arp_replies"] == 1
    # not our VTEP address (the gateway is the node's kernel's): dropped as not IPv4; an
    # asker that is not a current node never gets past the underlay source check
    assert r1.handle_underlay(arp_request("10.244.1.1"), (UNDERLAY2, 4789), 0.0) is None
    assert r1.handle_underlay(arp_request("10.244.1.0"), ("192.168.59.99", 4789), 0.0) is None
    stats = r1.statistics()
    assert stats["drop_not_ipv4"] == 1 and stats["drop_unknown_peer"] == 1
    assert stats["arp_replies"] == 1
