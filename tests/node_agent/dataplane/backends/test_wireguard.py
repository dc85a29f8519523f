"""``--encryption wireguard``: sealing, proof of origin, replay protection, and two routers that
carry a service flow only between nodes that hold each other's keys; the underlay source check
that holds with every backend.  Decapsulation is fuzzed (parse or reject, never crash)."""

from __future__ import annotations

import base64
import dataclasses

import pytest
from hypothesis import given, strategies as st

from knemu.errors import ConfigError
from knemu.node_agent import events as ev
from knemu.node_agent.dataplane import backends
from knemu.node_agent.dataplane.backends import wireguard as wg
from knemu.node_agent.dataplane.router import OUT_POD, OUT_UNDERLAY, Router
from knemu.node_agent.events import DropReason
from knemu.node_agent.kubeproxy.service_table import Backend
from knemu.proto import wire

from ..._cluster import MAC1, MAC2, POD_A, POD_B, UNDERLAY1, UNDERLAY2, VIP, node, syn, web
from .test_codecs import FUZZ, INNER

STRANGER = "192.168.59.99"


def pair() -> tuple[wg.WireguardBackend, wg.WireguardBackend]:
    a, b = wg.WireguardBackend(wg.KeyPair()), wg.WireguardBackend(wg.KeyPair())
    a.set_peer_key(UNDERLAY2, b.keys.public_b64)
    b.set_peer_key(UNDERLAY1, a.keys.public_b64)
    return a, b


def sealed(a: wg.WireguardBackend, packet: bytes = INNER) -> bytes:
    data, dst = a.encapsulate(packet, backends.PeerAddress(UNDERLAY2))
    assert dst == (UNDERLAY2, wg.WIREGUARD_PORT)
    return data


def test_message_is_wireguard_transport_data_and_opens_only_at_the_peer() -> None:
    a, b = pair()
    first, second = sealed(a), sealed(a)
    assert len(first) == len(INNER) + wg.HEADER_BYTES + wg.TAG_BYTES
    assert first[:4] == b"\x04\x00\x00\x00" and first[4:8] == b.index  # type 4, receiver
    assert first[8:16] == (0).to_bytes(8, "little") and second[8:16] == (1).to_bytes(8, "little")
    assert INNER[20:] not in first  # the payload is not on the wire in clear
    assert b.decapsulate(first, (UNDERLAY1, 51820)) == INNER
    assert b.decapsulate(second, (UNDERLAY1, 51820)) == INNER
    assert wg.OVERHEAD_BYTES == 60 and backends.overhead_bytes("ipip", "wireguard") == 60


def test_a_frame_not_sealed_by_the_claimed_sender_is_unauthenticated() -> None:
    a, b = pair()
    # A third node that knows both public keys (they are on the Node objects) but not A's
    # private key seals with its own; B tells by the tag, whatever the source address says.
    forger = wg.WireguardBackend(wg.KeyPair())
    forger.set_peer_key(UNDERLAY2, b.keys.public_b64)
    forged = bytearray(sealed(forger))
    assert b.decapsulate(bytes(forged), (UNDERLAY1, 51820)) is DropReason.UNAUTHENTICATED
    good = bytearray(sealed(a))
    good[-1] ^= 1  # one flipped bit of the tag
    assert b.decapsulate(bytes(good), (UNDERLAY1, 51820)) is DropReason.UNAUTHENTICATED
    good = bytearray(sealed(a))
    good[8] ^= 1  # a changed counter changes the nonce
    assert b.decapsulate(bytes(good), (UNDERLAY1, 51820)) is DropReason.UNAUTHENTICATED
    good = bytearray(sealed(a))
    good[0] = 1  # a handshake message type: not ours
    assert b.decapsulate(bytes(good), (UNDERLAY1, 51820)) is DropReason.UNAUTHENTICATED
    assert b.decapsulate(sealed(a), (STRANGER, 51820)) is DropReason.NO_PEER_KEY
    assert b.decapsulate(sealed(a)[:40], (UNDERLAY1, 51820)) is DropReason.TRUNCATED


def test_replays_are_dropped_and_reordering_within_the_window_is_not() -> None:
    a, b = pair()
    frames = [sealed(a) for _ in range(wg.REPLAY_WINDOW + 10)]
    src = (UNDERLAY1, 51820)
    assert b.decapsulate(frames[5], src) == INNER
    assert b.decapsulate(frames[5], src) is DropReason.REPLAYED
    assert b.decapsulate(frames[3], src) == INNER  # late but inside the window
    assert b.decapsulate(frames[3], src) is DropReason.REPLAYED
    assert b.decapsulate(frames[-1], src) == INNER
    assert b.decapsulate(frames[4], src) is DropReason.REPLAYED  # now older than the window
    assert b.decapsulate(frames[-2], src) == INNER
    # A forged frame with a fresh counter does not advance the window (checked after the tag).
    forged = bytearray(sealed(a))
    forged[8:16] = (10**6).to_bytes(8, "little")
    assert b.decapsulate(bytes(forged), src) is DropReason.UNAUTHENTICATED
    assert b.decapsulate(frames[-3], src) == INNER


def test_a_new_key_starts_a_new_session_and_the_same_key_keeps_its_counters() -> None:
    a, b = pair()
    sealed(a)
    a.set_peer_key(UNDERLAY2, b.keys.public_b64)  # a Node update with the same key
    assert a.sessions[UNDERLAY2].tx_counter == 1
    restarted = wg.WireguardBackend(wg.KeyPair())  # node-1 restarted: a fresh key pair
    restarted.set_peer_key(UNDERLAY2, b.keys.public_b64)
    assert b.decapsulate(sealed(restarted), (UNDERLAY1, 1)) is DropReason.UNAUTHENTICATED
    b.set_peer_key(UNDERLAY1, restarted.keys.public_b64)  # its new Node annotation arrives
    assert b.decapsulate(sealed(restarted), (UNDERLAY1, 1)) == INNER
    for _ in range(3):
        stale = sealed(a)  # the old key's counter passes the new session's highest (1)
    assert b.decapsulate(stale, (UNDERLAY1, 1)) is DropReason.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("not base64!", "is not base64"),
        (base64.b64encode(b"x" * 31).decode(), "is 31 bytes, not 32"),
        (base64.b64encode(bytes(32)).decode(), "low-order point"),
    ],
)
def test_bad_public_keys_are_named(key: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        wg.WireguardBackend(wg.KeyPair()).set_peer_key(UNDERLAY2, key)


@FUZZ
@given(st.binary(max_size=200))
def test_decapsulate_parses_or_rejects(data: bytes) -> None:
    _, b = pair()
    for framed in (data, b"\x04\x00\x00\x00" + b.index + data):
        assert isinstance(b.decapsulate(framed, (UNDERLAY1, 1)), bytes | DropReason)


# -- two routers -------------------------------------------------------------------------


def router_pair(
    keys: bool = True,
) -> tuple[Router, Router, list[ev.FlowEvent]]:
    events: list[ev.FlowEvent] = []
    k1, k2 = backends.KeyPair(), backends.KeyPair()
    r1 = Router(dataclasses.replace(node(1), encryption="wireguard", mtu=1440), keys=k1)
    r2 = Router(
        dataclasses.replace(node(2), encryption="wireguard", mtu=1440),
        keys=k2,
        flow_sink=events.append,
    )
    r1.set_peer("node-2", "10.244.2.0/24", UNDERLAY2, MAC2, public_key=k2.public_b64)
    r2.set_peer(
        "node-1", "10.244.1.0/24", UNDERLAY1, MAC1, public_key=k1.public_b64 if keys else ""
    )
    r1.add_local_pod(POD_A, "a")
    r2.add_local_pod(POD_B, "b")
    return r1, r2, events


def test_routers_carry_a_service_flow_sealed() -> None:
    r1, r2, _ = router_pair()
    entry, backs = web([Backend(POD_B, 8080, True)])
    r1.set_service(entry.key, entry, backs)
    out = r1.handle_pod("a", syn(POD_A, VIP, 40000, 80), 0.0)
    assert out is not None and out[0] is OUT_UNDERLAY and out[1] == (UNDERLAY2, 51820)
    got = r2.handle_underlay(out[2], (UNDERLAY1, 51820), 0.0)
    assert got is not None and got[0] is OUT_POD and got[1] == "b"
    packet = wire.decode_ipv4(got[2])
    assert packet.dst == POD_B and packet.ttl == 62  # DNATed on node-1, routed twice
    again = r2.handle_underlay(out[2], (UNDERLAY1, 51820), 0.0)
    assert again is None and r2.statistics()["drop_replayed"] == 1
    assert r2.table_snapshot()["wireguard"]["peers"][UNDERLAY1]["highest_received"] == 0


def test_a_peer_without_a_key_gets_nothing_and_its_frames_are_dropped() -> None:
    r1, r2, _ = router_pair(keys=False)
    assert r2.handle_pod("b", syn(POD_B, POD_A, 1, 2), 0.0) is None
    assert r2.statistics()["drop_no_peer_key"] == 1
    out = r1.handle_pod("a", syn(POD_A, POD_B, 1, 2), 0.0)
    assert out is not None
    assert r2.handle_underlay(out[2], (UNDERLAY1, 51820), 0.0) is None
    assert r2.statistics()["drop_no_peer_key"] == 2


def test_encryption_needs_an_encapsulating_backend() -> None:
    with pytest.raises(ConfigError, match="use --backend vxlan or ipip"):
        Router(dataclasses.replace(node(1), backend="bgp", encryption="wireguard"))
    with pytest.raises(ConfigError, match="'ipsec' is not one of none, wireguard"):
        Router(dataclasses.replace(node(1), encryption="ipsec"))


@pytest.mark.parametrize("backend", ["vxlan", "ipip", "wireguard"])
def test_a_frame_from_a_non_node_address_is_dropped_with_its_source_in_flows(
    backend: str,
) -> None:
    """The underlay source check: whatever the frame holds, a sender that is not a current
    node's underlay address is refused before decapsulation, and the flow names it."""
    events: list[ev.FlowEvent] = []
    encryption = "wireguard" if backend == "wireguard" else "none"
    kind = "vxlan" if backend == "wireguard" else backend
    r2 = Router(
        dataclasses.replace(node(2), backend=kind, encryption=encryption), flow_sink=events.append
    )
    r2.set_peer("node-1", "10.244.1.0/24", UNDERLAY1, MAC1, public_key=wg.KeyPair().public_b64)
    r2.add_local_pod(POD_B, "b")
    inner = wire.udp_packet("10.244.1.66", POD_B, 5000, 9999, b"spoofed")
    frame, _ = backends.create("vxlan", vtep_mac=MAC1).encapsulate(
        inner, backends.PeerAddress(UNDERLAY2, MAC2)
    )
    if backend == "ipip":
        frame = backends.ipip.encode_ipip(STRANGER, UNDERLAY2, inner)
    assert r2.handle_underlay(frame, (STRANGER, 4789), 0.0) is None
    assert r2.statistics()["drop_unknown_peer"] == 1
    assert r2.statistics()["delivered"] == 0
    (drop,) = events
    assert isinstance(drop, ev.FlowDropped) and drop.reason == "unknown_peer"
    assert drop.outer is not None and drop.outer.src_ip == STRANGER
    if backend != "wireguard":  # readable: the flow shows what it carried
        assert drop.flow is not None and drop.flow.src_ip == "10.244.1.66"
