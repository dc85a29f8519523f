"""Conntrack: the TCP state table over every state/input pair, keys, expiry, flushes."""

from __future__ import annotations

import itertools

import pytest

from knemu.node_agent.kubeproxy.conntrack import (
    CLOSE,
    ESTABLISHED,
    FIN_WAIT,
    SYN_SENT,
    Conntrack,
    CtTimeouts,
    reverse,
)
from knemu.proto import wire

T = CtTimeouts()
CLIENT = wire.ip_to_bytes("10.244.1.5")
VIP = wire.ip_to_bytes("10.96.0.20")
BACKEND = wire.ip_to_bytes("10.244.2.7")
ORIG = CLIENT + VIP + (40000).to_bytes(2, "big") + (80).to_bytes(2, "big")
TRANSLATED = CLIENT + BACKEND + (40000).to_bytes(2, "big") + (8080).to_bytes(2, "big")

SYN, SYNACK, ACK = wire.TCP_SYN, wire.TCP_SYN | wire.TCP_ACK, wire.TCP_ACK
FIN, RST = wire.TCP_FIN | wire.TCP_ACK, wire.TCP_RST

# (state, flags, reply) -> expected state; the timeout follows from the state.
EXPECTED = {
    (SYN_SENT, SYN, False): SYN_SENT,
    (SYN_SENT, SYNACK, True): ESTABLISHED,
    (SYN_SENT, SYN, True): ESTABLISHED,  # simultaneous open: any reply establishes
    (SYN_SENT, ACK, True): ESTABLISHED,
    (SYN_SENT, ACK, False): SYN_SENT,
    (ESTABLISHED, ACK, False): ESTABLISHED,
    (ESTABLISHED, ACK, True): ESTABLISHED,
    (ESTABLISHED, SYN, False): ESTABLISHED,
    (FIN_WAIT, ACK, False): FIN_WAIT,
    (FIN_WAIT, ACK, True): FIN_WAIT,
    (FIN_WAIT, SYN, False): SYN_SENT,  # tuple reused by a new connection
    (CLOSE, SYN, False): SYN_SENT,
    (CLOSE, ACK, True): CLOSE,
}
TIMEOUT = {
    SYN_SENT: T.tcp_syn_sent_s,
    ESTABLISHED: T.tcp_established_s,
    FIN_WAIT: T.tcp_fin_s,
    CLOSE: T.tcp_close_s,
}


def _expected(state: str, flags: int, reply: bool) -> str:
    if flags & wire.TCP_RST:
        return CLOSE
    if flags & wire.TCP_FIN:
        return FIN_WAIT
    return EXPECTED.get((state, flags, reply), state)


@pytest.mark.parametrize(
    ("state", "flags", "reply"),
    list(itertools.product(TIMEOUT, (SYN, SYNACK, ACK, FIN, RST), (False, True))),
)
def test_tcp_state_table(state: str, flags: int, reply: bool) -> None:
    ct = Conntrack()
    entry = ct.create(6, ORIG, TRANSLATED, "default/web:http", 0.0, syn=True)
    assert entry is not None
    entry.state, entry.timeout = state, TIMEOUT[state]
    ct.tcp_update(entry, flags, reply)
    want = _expected(state, flags, reply)
    assert (entry.state, entry.timeout) == (want, TIMEOUT[want])


def test_keys_both_directions_and_collisions() -> None:
    ct = Conntrack()
    entry = ct.create(6, ORIG, TRANSLATED, "default/web:http", 5.0, syn=True)
    assert entry is not None and len(ct) == 1
    fwd = ct.lookup(6, ORIG, 5.0)
    rev = ct.lookup(6, reverse(TRANSLATED), 5.0)
    assert fwd is entry.fwd and rev is entry.rev and rev.reply and not fwd.reply
    assert rev.addrs == VIP + CLIENT and rev.ports == ORIG[10:12] + ORIG[8:10]
    assert ct.lookup(17, ORIG, 5.0) is None
    assert ct.create(6, ORIG, TRANSLATED, "x/y:z", 5.0, syn=True) is None  # already tracked
    assert ct.active(bytes((6,)) + BACKEND + (8080).to_bytes(2, "big")) == 1


def test_idle_entries_vanish_at_lookup_and_expire() -> None:
    ct = Conntrack(CtTimeouts(udp_s=30.0))
    entry = ct.create(17, ORIG, TRANSLATED, "default/dns:dns", 0.0, syn=False)
    assert entry is not None and ct.next_deadline() == 30.0
    assert ct.lookup(17, ORIG, 30.0) is not None
    assert ct.lookup(17, ORIG, 30.5) is None and len(ct) == 0
    ct.create(17, ORIG, TRANSLATED, "default/dns:dns", 100.0, syn=False)
    assert ct.expire(120.0) == [] and len(ct) == 1
    assert len(ct.expire(131.0)) == 1 and ct.next_deadline() is None


def test_flush_and_mark_dead_only_touch_the_named_service() -> None:
    ct = Conntrack()
    backend = bytes((17,)) + BACKEND + (8080).to_bytes(2, "big")
    ct.create(17, ORIG, TRANSLATED, "default/a:p", 0.0, syn=False)
    other = CLIENT + VIP[:3] + b"\x21" + ORIG[8:]
    ct.create(
        17, other, TRANSLATED[:8] + b"\x9c\x41" + TRANSLATED[10:], "default/b:p", 0.0, syn=False
    )
    assert ct.flush_backends({backend}, 17, "default/a") == 1
    assert [e.service for e in ct.entries()] == ["default/b:p"]
    assert ct.mark_dead({backend}, 6, "default/b") == 0  # wrong protocol
    assert ct.mark_dead({backend}, 17, "default/b") == 1
    assert next(ct.entries()).dead
