"""MetalLB-L2 style announcement choice and the gratuitous ARP frame."""

from __future__ import annotations

import hashlib

import pytest

from knemu.node_agent.kubeproxy.l2announce import (
    LoadBalancerAddress,
    announced_by,
    garp,
    speaker,
)

NODES = ["node-1", "node-2", "node-3"]


def test_the_speaker_is_the_first_node_by_hash_of_name_and_address() -> None:
    ip = "192.0.2.10"
    expected = min(NODES, key=lambda n: hashlib.sha256(f"{n}#{ip}".encode()).digest())
    assert speaker(ip, NODES) == expected
    assert speaker(ip, reversed(NODES)) == expected  # order of the inputs does not matter
    assert speaker(ip, []) is None


def test_addresses_spread_over_nodes_and_each_has_exactly_one_speaker() -> None:
    addrs = [LoadBalancerAddress(f"default/s{i}", f"192.0.2.{i}") for i in range(1, 61)]
    mine = {n: announced_by(n, addrs, NODES) for n in NODES}
    assert sum(len(m) for m in mine.values()) == 60
    assert set().union(*mine.values()) == {a.ip for a in addrs}
    assert all(mine.values())  # every node announces some of 60 addresses


def test_when_the_speaker_is_not_ready_the_next_node_takes_over() -> None:
    addr = LoadBalancerAddress("default/web", "192.0.2.10")
    first = speaker(addr.ip, NODES)
    assert first is not None and announced_by(first, [addr], NODES) == {addr.ip}
    survivors = [n for n in NODES if n != first]
    assert announced_by(first, [addr], survivors) == set()
    second = speaker(addr.ip, survivors)
    assert second is not None and announced_by(second, [addr], survivors) == {addr.ip}


def test_local_policy_announces_only_from_a_node_with_an_endpoint() -> None:
    addr = LoadBalancerAddress("default/web", "192.0.2.10", True, frozenset({"node-2"}))
    assert {n for n in NODES if announced_by(n, [addr], NODES)} == {"node-2"}
    assert not any(announced_by(n, [addr], ["node-1", "node-3"]) for n in NODES)


def test_gratuitous_arp_frame_is_rfc_5227_announcement() -> None:
    frame = garp("02:00:00:00:00:01", "192.0.2.10")
    assert len(frame) == 42
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == bytes.fromhex("020000000001")
    assert frame[12:14] == b"\x08\x06"
    arp = frame[14:]
    assert arp[:8] == bytes.fromhex("0001080006040001")  # Ethernet/IPv4 request
    assert arp[8:14] == bytes.fromhex("020000000001") and arp[14:18] == bytes([192, 0, 2, 10])
    assert arp[18:24] == b"\x00" * 6 and arp[24:28] == bytes([192, 0, 2, 10])
    with pytest.raises(ValueError):
        garp("02:00", "192.0.2.10")
