"""The wire cache of the answer core: a hit is the parsing path's reply byte for byte, a view
change is seen by the very next query, and the cache stays bounded."""

from __future__ import annotations

import random
from collections import Counter

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import pytest
from dns_cluster import (
    answers,
    endpoint,
    endpoint_slice,
    fixture_cluster,
    pod,
    populate,
    service,
)

from knemu.config import DnsConfig
from knemu.dns.answer import Answerer, Drop, Forward, Outcome, Reply
from knemu.dns.view import ClusterView
from knemu.dns.wire_cache import cache_key as _cache_key

Z = "cluster.local."
V6_PTR = "2.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.0.d.f.ip6.arpa."
BIG = f"big.team-a.svc.{Z}"  # headless, 60 endpoints: does not fit 512 bytes


def cluster() -> ClusterView:
    view = ClusterView()
    populate(view)
    view.apply("ADDED", "Service", service("team-a", "big", "None", [("http", "TCP", 80)]))
    eps = [endpoint(f"10.245.{i // 200}.{i % 200 + 1}") for i in range(60)]
    view.apply("ADDED", "EndpointSlice", endpoint_slice("team-a", "big-1", "big", eps))
    view.mark_synced()
    return view


def uncached(view: ClusterView, config: DnsConfig | None = None) -> Answerer:
    """The parsing path alone: nothing is ever kept."""
    answerer = Answerer(view, config or DnsConfig())
    answerer.cache.max_entries = 0
    return answerer


def wire_of(name: str, rdtype: str = "A", qid: int = 1, **kwargs: object) -> bytes:
    query = dns.message.make_query(name, rdtype, **kwargs)  # type: ignore[arg-type]
    query.id = qid
    return query.to_wire()


def reply_wire(outcome: Outcome) -> bytes:
    assert isinstance(outcome, Reply), outcome
    return outcome.wire


def seeded(answerer: Answerer, wire: bytes, proto: str = "udp") -> bytes:
    """The reply with the record order fixed: dnspython and a hit both order an RRset's records
    with ``random.shuffle``, so from the same seed they put them in the same order."""
    random.seed(20261121)
    return reply_wire(answerer.handle(wire, proto))


def swapcase(name: str) -> str:
    return "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(name))


PADDING = dns.edns.GenericOption(dns.edns.OptionType.PADDING, b"")
COOKIE = dns.edns.CookieOption(b"12345678", b"")
# (name, type, make_query keyword arguments, transport)
SHAPES: list[tuple[str, str, dict[str, object], str]] = [
    (f"web.default.svc.{Z}", "A", {}, "udp"),
    (f"web.default.svc.{Z}", "A", {"use_edns": 0}, "udp"),
    (f"web.default.svc.{Z}", "A", {"use_edns": 0, "payload": 4096, "want_dnssec": True}, "udp"),
    (f"web.default.svc.{Z}", "A", {}, "tcp"),
    (f"dual.default.svc.{Z}", "AAAA", {}, "udp"),
    (f"dual.default.svc.{Z}", "ANY", {"use_edns": 0}, "tcp"),
    (f"web.default.svc.{Z}", "AAAA", {}, "udp"),  # NODATA: SOA in authority
    (f"nope.default.svc.{Z}", "A", {}, "udp"),  # NXDOMAIN
    (f"nope.default.svc.{Z}", "A", {"use_edns": 0}, "tcp"),
    (f"_http._tcp.web.default.svc.{Z}", "SRV", {}, "udp"),
    (f"_pg._tcp.db.team-a.svc.{Z}", "SRV", {"use_edns": 0}, "udp"),
    (f"db.team-a.svc.{Z}", "SRV", {}, "udp"),
    (f"db-0.db.team-a.svc.{Z}", "A", {}, "udp"),
    (f"_tcp.web.default.svc.{Z}", "A", {}, "udp"),  # empty non-terminal
    ("20.0.96.10.in-addr.arpa.", "PTR", {}, "udp"),
    ("20.0.96.10.in-addr.arpa.", "PTR", {"use_edns": 0}, "tcp"),
    (V6_PTR, "PTR", {}, "udp"),
    ("9.9.9.10.in-addr.arpa.", "PTR", {}, "udp"),  # not ours, no upstream: REFUSED
    ("example.com.", "A", {}, "udp"),  # REFUSED
    (Z, "SOA", {}, "udp"),
    (Z, "NS", {"use_edns": 0}, "udp"),  # glue in the additional section
    (f"dns-version.{Z}", "TXT", {}, "udp"),
    (f"alias.team-a.svc.{Z}", "A", {}, "udp"),  # in-zone CNAME chain
    (f"alias.team-a.svc.{Z}", "CNAME", {}, "udp"),
    (f"10-244-1-50.team-a.pod.{Z}", "A", {}, "udp"),
    (f"web.default.svc.{Z}", "AXFR", {}, "tcp"),  # NOTIMP
    (f"web.default.svc.{Z}", "HTTPS", {}, "udp"),
    (f"web.default.svc.{Z}", "TYPE97", {}, "udp"),
    (f"web.default.svc.{Z}", "A", {"use_edns": 1}, "udp"),  # BADVERS
    (f"web.default.svc.{Z}", "A", {"use_edns": 0, "options": [PADDING]}, "udp"),  # padded reply
    (f"web.default.svc.{Z}", "A", {"use_edns": 0, "options": [COOKIE]}, "udp"),
    (f"web.default.svc.{Z}", "A", {"flags": dns.flags.CD}, "udp"),  # RD clear, CD set
    (BIG, "A", {}, "udp"),  # truncated at 512 bytes
    (BIG, "A", {"use_edns": 0, "payload": 1232}, "udp"),
    (BIG, "A", {"use_edns": 0, "payload": 4096}, "udp"),
    (BIG, "A", {}, "tcp"),
    (BIG, "SRV", {"use_edns": 0, "payload": 600}, "udp"),
]


@pytest.mark.parametrize(("name", "rdtype", "kwargs", "proto"), SHAPES)
def test_hit_is_the_parsing_paths_reply(
    name: str, rdtype: str, kwargs: dict[str, object], proto: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    view = cluster()
    reference, answerer = uncached(view), Answerer(view, DnsConfig())
    first = wire_of(name, rdtype, 0x1234, **kwargs)
    assert _cache_key(first, proto) is not None, "a plain query takes the cached path"
    assert seeded(answerer, first, proto) == seeded(reference, first, proto)
    assert answerer.cache_statistics()["entries"] == 1

    def parse(*_args: object) -> Outcome:
        raise AssertionError("a repeated query must be answered from the cache")

    monkeypatch.setattr(answerer, "_handle", parse)
    for qid, variant in ((0xBEEF, name), (7, name.upper()), (0, swapcase(name))):
        again = wire_of(variant, rdtype, qid, **kwargs)
        got = seeded(answerer, again, proto)
        assert got == seeded(reference, again, proto), variant
        reply = dns.message.from_wire(got)
        assert reply.id == qid and str(reply.question[0].name) == variant
        assert all(str(rrset.name) == variant for rrset in reply.answer[:1])


def test_hits_keep_the_round_robin() -> None:
    """Every order of a multi-record RRset comes out of the cache, with the same records."""
    view = cluster()
    answerer = Answerer(view, DnsConfig())
    firsts: Counter[str] = Counter()
    for name, rdtype in ((f"db.team-a.svc.{Z}", "A"), (f"_pg._tcp.db.team-a.svc.{Z}", "SRV")):
        expected = answers(dns.message.from_wire(reply_wire(uncached(view).handle(wire_of(
            name, rdtype)))))  # fmt: skip
        for qid in range(200):
            reply = dns.message.from_wire(reply_wire(answerer.handle(wire_of(name, rdtype, qid))))
            assert answers(reply) == expected
            firsts[f"{rdtype} {reply.answer[0][0]}"] += 1
    assert answerer.cache_statistics()["entries"] == 2
    assert len(firsts) == 4 and min(firsts.values()) > 50, firsts
    big = {
        str(
            dns.message.from_wire(reply_wire(answerer.handle(wire_of(BIG, qid=i), "tcp"))).answer[
                0
            ][0]
        )
        for i in range(20)
    }
    assert len(big) > 1


def test_truncation_follows_transport_and_payload() -> None:
    answerer = Answerer(cluster(), DnsConfig())
    for _ in range(2):  # miss, then hit
        small = reply_wire(answerer.handle(wire_of(BIG), "udp"))
        edns = reply_wire(answerer.handle(wire_of(BIG, use_edns=0, payload=4096), "udp"))
        tcp = reply_wire(answerer.handle(wire_of(BIG), "tcp"))
        assert len(small) <= 512 and dns.message.from_wire(small).flags & dns.flags.TC
        assert not dns.message.from_wire(edns).flags & dns.flags.TC
        assert len(answers(dns.message.from_wire(tcp))) == 60
        assert not dns.message.from_wire(tcp).flags & dns.flags.TC
    assert answerer.cache_statistics()["entries"] == 3


def test_metrics_count_hits_like_the_parsing_path() -> None:
    view = cluster()
    reference, answerer = uncached(view), Answerer(view, DnsConfig())
    for round_ in range(3):
        for i, (name, rdtype, kwargs, proto) in enumerate(SHAPES):
            wire = wire_of(name, rdtype, round_ * 100 + i, **kwargs)
            family = 1 + i % 2
            for core in (reference, answerer):
                core.handle(wire, proto, family)
    assert answerer.metrics.requests == reference.metrics.requests
    assert answerer.metrics.responses == reference.metrics.responses
    assert answerer.metrics.requests[(Z, "udp", "1", "HTTPS")] > 0  # qtype bytes are not folded
    assert answerer.metrics.requests[(Z, "udp", "2", "other")] > 0
    assert answerer.cache_statistics()["entries"] == len(SHAPES)


# ---- no stale answers -----------------------------------------------------------------------


def ask_twice(answerer: Answerer, name: str, rdtype: str = "A") -> dns.message.Message:
    """Ask so that the second answer would come from the cache; both must agree."""
    one = seeded(answerer, wire_of(name, rdtype, 5))
    two = seeded(answerer, wire_of(name, rdtype, 5))
    assert one == two
    return dns.message.from_wire(two)


def test_service_created_and_deleted_is_seen_by_the_next_query() -> None:
    answerer = Answerer(cluster(), DnsConfig())
    name = f"new.default.svc.{Z}"
    assert ask_twice(answerer, name).rcode() == dns.rcode.NXDOMAIN
    assert ask_twice(answerer, "77.0.96.10.in-addr.arpa.", "PTR").rcode() == dns.rcode.REFUSED
    svc = service("default", "new", "10.96.0.77", [("http", "TCP", 80)])
    answerer.view.apply("ADDED", "Service", svc)
    assert answers(ask_twice(answerer, name)) == {f"{name} A 10.96.0.77"}
    assert answers(ask_twice(answerer, "77.0.96.10.in-addr.arpa.", "PTR")) == {
        f"77.0.96.10.in-addr.arpa. PTR {name}"
    }
    assert len(ask_twice(answerer, f"_http._tcp.{name}", "SRV").answer) == 1
    # the same object again (a replayed event: no newer resourceVersion) still counts
    answerer.view.apply("DELETED", "Service", svc)
    assert ask_twice(answerer, name).rcode() == dns.rcode.NXDOMAIN
    assert ask_twice(answerer, f"_http._tcp.{name}", "SRV").rcode() == dns.rcode.NXDOMAIN
    assert ask_twice(answerer, "77.0.96.10.in-addr.arpa.", "PTR").rcode() == dns.rcode.REFUSED
    answerer.view.apply("ADDED", "Service", svc)
    assert answers(ask_twice(answerer, name)) == {f"{name} A 10.96.0.77"}


def test_endpoints_and_pods_are_seen_by_the_next_query() -> None:
    answerer = Answerer(cluster(), DnsConfig(pods_mode="verified"))
    name = f"db.team-a.svc.{Z}"
    assert len(answers(ask_twice(answerer, name))) == 2
    slice_ = endpoint_slice("team-a", "db-abc", "db", [endpoint("10.244.1.5", hostname="db-0")])
    answerer.view.apply("MODIFIED", "EndpointSlice", slice_)
    assert answers(ask_twice(answerer, name)) == {f"{name} A 10.244.1.5"}
    pod_name = f"10-244-9-9.team-a.pod.{Z}"
    assert ask_twice(answerer, pod_name).rcode() == dns.rcode.NXDOMAIN
    answerer.view.apply("ADDED", "Pod", pod("team-a", "p", "10.244.9.9"))
    assert answers(ask_twice(answerer, pod_name)) == {f"{pod_name} A 10.244.9.9"}


def test_nothing_is_kept_before_the_sync() -> None:
    view = ClusterView()
    view.apply("ADDED", "Service", service("default", "web", "10.96.0.20"))
    answerer = Answerer(view, DnsConfig())
    assert ask_twice(answerer, f"web.default.svc.{Z}").rcode() == dns.rcode.SERVFAIL
    assert ask_twice(answerer, "example.com.").rcode() == dns.rcode.REFUSED
    assert answerer.cache_statistics()["entries"] == 0
    view.mark_synced()  # no resourceVersion: the SOA serial stays, the answers change
    assert answers(ask_twice(answerer, f"web.default.svc.{Z}")) == {
        f"web.default.svc.{Z} A 10.96.0.20"
    }


def test_generation_moves_with_every_change() -> None:
    view = ClusterView()
    seen = {view.generation}
    svc = service("default", "web", "10.96.0.20")
    for change in (
        lambda: view.apply("ADDED", "Service", svc),
        lambda: view.apply("MODIFIED", "Service", svc),  # same resourceVersion
        lambda: view.mark_synced(),
        lambda: view.mark_synced(),
        lambda: view.apply("DELETED", "Service", svc),
    ):
        change()
        assert view.generation not in seen
        seen.add(view.generation)


# ---- what is not cached ---------------------------------------------------------------------


def test_forwarded_and_header_only_replies_are_not_kept() -> None:
    answerer = Answerer(cluster(), DnsConfig(upstream="127.0.0.1:53000"))
    for name in ("example.com.", "9.9.9.10.in-addr.arpa.", f"ext.team-a.svc.{Z}"):
        outcome = answerer.handle(wire_of(name))
        assert isinstance(outcome, Forward), name
        answerer.relay(outcome, None)
    bad_opcode = bytearray(wire_of(f"web.default.svc.{Z}"))
    bad_opcode[2] |= dns.opcode.to_flags(dns.opcode.NOTIFY) >> 8
    bad_count = bytearray(wire_of(f"web.default.svc.{Z}"))
    bad_count[5] = 2
    bad_name = wire_of(f"web.default.svc.{Z}")[:14] + b"\xff" * 4
    for wire, rcode in ((bad_opcode, dns.rcode.NOTIMP), (bad_count, dns.rcode.FORMERR),
                        (bad_name, dns.rcode.FORMERR)):  # fmt: skip
        for _ in range(2):
            outcome = answerer.handle(bytes(wire))
            assert isinstance(outcome, Reply) and outcome.rcode == rcode
    assert isinstance(answerer.handle(b"\x00" * 5), Drop)
    assert answerer.cache_statistics()["entries"] == 0


def test_unusual_queries_take_the_parsing_path() -> None:
    plain = wire_of(f"web.default.svc.{Z}", use_edns=0)
    assert _cache_key(plain, "udp") is not None
    assert _cache_key(plain, "quic") is None
    assert _cache_key(plain + b"\x00", "udp") is None  # trailing bytes
    assert _cache_key(plain[:-1], "udp") is None
    assert _cache_key(wire_of(f"web.default.svc.{Z}") + b"\x00", "udp") is None
    pointer = plain[:12] + b"\xc0\x0c" + plain[-15:]  # a compression pointer in the question
    assert _cache_key(pointer, "udp") is None
    response = bytearray(plain)
    response[2] |= 0x80
    assert _cache_key(bytes(response), "udp") is None
    signed = dns.message.make_query(f"web.default.svc.{Z}", "A")
    signed.use_tsig(dns.tsig.Key("key.", b"0123456789abcdef"))
    assert _cache_key(signed.to_wire(), "udp") is None
    answerer = Answerer(cluster(), DnsConfig())
    for _ in range(2):
        outcome = answerer.handle(signed.to_wire())
        assert isinstance(outcome, Reply) and outcome.rcode == dns.rcode.NOTAUTH
    assert answerer.cache_statistics()["entries"] == 0
    # the key tells transports, flags, classes and payload sizes apart, but not name case
    keys = {
        _cache_key(wire_of(f"web.default.svc.{Z}", **kwargs), proto)  # type: ignore[arg-type]
        for kwargs, proto in (
            ({}, "udp"), ({}, "tcp"), ({"use_edns": 0}, "udp"), ({"use_edns": 0, "payload": 4096},
            "udp"), ({"flags": 0}, "udp"), ({"rdclass": dns.rdataclass.CH}, "udp"),
        )
    }  # fmt: skip
    assert len(keys) == 6
    assert _cache_key(wire_of(f"WEB.default.svc.{Z}"), "udp") == _cache_key(
        wire_of(f"web.default.svc.{Z}", qid=9), "udp"
    )


# ---- bounded --------------------------------------------------------------------------------


def test_flood_of_distinct_names_stays_bounded() -> None:
    answerer = Answerer(fixture_cluster(), DnsConfig())
    answerer.cache.max_entries = 100
    hot = wire_of(f"web.default.svc.{Z}")
    for i in range(1000):
        answerer.handle(wire_of(f"n{i}.default.svc.{Z}"))
        answerer.handle(hot)  # recently used: survives the flood
        assert answerer.cache_statistics()["entries"] <= 100
    assert answerer.cache_statistics()["entries"] == 100
    key = _cache_key(hot, "udp")
    assert key is not None and answerer.cache.get(key[0], answerer.view.generation) is not None


def test_default_bound_in_entries_and_bytes() -> None:
    answerer = Answerer(cluster(), DnsConfig())
    for i in range(answerer.cache.max_entries + 500):
        answerer.handle(wire_of(f"x{i}.{Z}"))
    stats = answerer.cache_statistics()
    assert stats["entries"] == answerer.cache.max_entries
    assert 0 < stats["bytes"] <= answerer.cache.max_bytes
    answerer.cache.max_bytes = 20_000
    for i in range(50):
        answerer.handle(wire_of(BIG, qid=i), "tcp")
        answerer.handle(wire_of(f"y{i}.{Z}"))
    assert answerer.cache_statistics()["bytes"] <= 20_000
