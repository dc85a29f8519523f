"""Parse it or reject it, never crash: random and mutated queries through the answer core.

Every input must give either a reply that parses as a DNS response to the same ID, or a drop
that is counted in the metrics.
"""

from __future__ import annotations

import random

import dns.flags
import dns.message
import dns.rcode
from dns_cluster import fixture_cluster
from hypothesis import HealthCheck, given, seed, settings, strategies as st

from knemu.config import DnsConfig
from knemu.dns.answer import Answerer, Drop, Forward, Reply

ANSWERER = Answerer(fixture_cluster(), DnsConfig())
FORWARDING = Answerer(fixture_cluster(), DnsConfig(upstream="127.0.0.1:53000"))
NAMES = [
    "web.default.svc.cluster.local.",
    "_pg._tcp.db.team-a.svc.cluster.local.",
    "20.0.96.10.in-addr.arpa.",
    "alias.team-a.svc.cluster.local.",
    "10-244-1-5.team-a.pod.cluster.local.",
    "example.com.",
]
TYPES = ["A", "AAAA", "SRV", "PTR", "TXT", "ANY", "CNAME", "SOA", "NS"]


def _check(answerer: Answerer, wire: bytes, proto: str) -> None:
    drops_before = sum(answerer.metrics.dropped.values())
    outcome = answerer.handle(wire, proto)
    if isinstance(outcome, Drop):
        assert sum(answerer.metrics.dropped.values()) == drops_before + 1
        return
    if isinstance(outcome, Forward):
        outcome = answerer.relay(outcome, None)
    assert isinstance(outcome, Reply)
    reply = dns.message.from_wire(outcome.wire, keyring=False)
    assert reply.id == int.from_bytes(wire[:2], "big")
    assert reply.flags & dns.flags.QR
    if proto == "udp":
        assert len(outcome.wire) <= 4096


@seed(20261121)
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.sampled_from(["udp", "tcp"]))
def test_random_bytes(wire: bytes, proto: str) -> None:
    _check(ANSWERER, wire, proto)


@st.composite
def mutated_queries(draw: st.DrawFn) -> bytes:
    query = dns.message.make_query(
        draw(st.sampled_from(NAMES)),
        draw(st.sampled_from(TYPES)),
        use_edns=draw(st.sampled_from([None, 0, 1])),
        payload=draw(st.integers(0, 65535)),
    )
    wire = bytearray(query.to_wire())
    for _ in range(draw(st.integers(0, 6))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "set"]))
        position = draw(st.integers(0, max(0, len(wire) - 1)))
        if action == "flip" and wire:
            wire[position] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del wire[position:]
        elif action == "insert":
            wire[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif wire:
            wire[position] = draw(st.integers(0, 255))
    return bytes(wire)


@seed(20261122)
@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_queries(), st.sampled_from(["udp", "tcp"]), st.booleans())
def test_mutated_queries(wire: bytes, proto: str, forwarding: bool) -> None:
    _check(FORWARDING if forwarding else ANSWERER, wire, proto)


def test_seeded_mutations_reach_every_outcome() -> None:
    """A plain seeded loop over bit flips: every mutant is handled, and the mutants reach
    NOERROR, NXDOMAIN, FORMERR, NOTIMP replies and counted drops (the fuzzing is not vacuous)."""
    rng = random.Random(4242)
    answerer = Answerer(fixture_cluster(), DnsConfig())
    for i in range(4000):
        query = dns.message.make_query(NAMES[i % len(NAMES)], TYPES[i % len(TYPES)])
        wire = bytearray(query.to_wire())
        for _ in range(rng.randint(1, 3)):
            wire[rng.randrange(len(wire))] ^= 1 << rng.randrange(8)
        _check(answerer, bytes(wire), "udp")
    rcodes = {key[1] for key in answerer.metrics.responses}
    assert {"NOERROR", "NXDOMAIN", "FORMERR", "NOTIMP", "REFUSED"} <= rcodes
    assert answerer.metrics.dropped["not-a-query"] > 0
