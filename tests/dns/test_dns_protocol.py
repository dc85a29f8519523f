"""Message-level behaviour: bad input, opcodes, classes, EDNS, truncation, relaying, metrics."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.tsigkeyring
import pytest
from dns_cluster import ask, endpoint, endpoint_slice, fixture_cluster, service

from knemu.config import DnsConfig
from knemu.dns.answer import Answerer, Drop, Forward, Reply
from knemu.dns.metrics import rcode_label, type_label

Z = "cluster.local."


@pytest.fixture
def answerer() -> Answerer:
    return Answerer(fixture_cluster(), DnsConfig())


def _reply(outcome: object) -> dns.message.Message:
    assert isinstance(outcome, Reply), outcome
    return dns.message.from_wire(outcome.wire)


def test_short_message_is_a_counted_drop(answerer: Answerer) -> None:
    for wire in (b"", b"\x12", b"\x12\x34" + b"\x00" * 9):
        assert answerer.handle(wire) == Drop("short-header")
    assert answerer.metrics.dropped["short-header"] == 3


def test_responses_are_never_answered(answerer: Answerer) -> None:
    query = dns.message.make_query(f"web.default.svc.{Z}", "A")
    response = dns.message.make_response(query)
    assert answerer.handle(response.to_wire()) == Drop("not-a-query")
    assert 'reason="not-a-query"} 1' in answerer.metrics.render()


@pytest.mark.parametrize("opcode", [dns.opcode.IQUERY, dns.opcode.STATUS, dns.opcode.NOTIFY,
                                    dns.opcode.UPDATE])  # fmt: skip
def test_other_opcodes_get_notimp(answerer: Answerer, opcode: dns.opcode.Opcode) -> None:
    query = dns.message.make_query(f"web.default.svc.{Z}", "A")
    query.set_opcode(opcode)
    reply = _reply(answerer.handle(query.to_wire()))
    assert reply.id == query.id and reply.opcode() == opcode
    assert reply.rcode() == dns.rcode.NOTIMP
    assert reply.flags & dns.flags.QR and reply.flags & dns.flags.RD


@pytest.mark.parametrize("qdcount", [0, 2])
def test_qdcount_must_be_one(answerer: Answerer, qdcount: int) -> None:
    wire = bytearray(dns.message.make_query(f"web.default.svc.{Z}", "A").to_wire())
    wire[4:6] = qdcount.to_bytes(2, "big")
    reply = _reply(answerer.handle(bytes(wire)))
    assert reply.rcode() == dns.rcode.FORMERR and not reply.question


@pytest.mark.parametrize(
    "mutate",
    [
        lambda w: w[:-3],  # question cut short
        lambda w: w + b"\x00\x01",  # trailing junk
        lambda w: w[:12] + b"\xc0\x0c" + w[-4:],  # compression pointer loop
        lambda w: w[:12] + b"\x7f" + b"a" * 10,  # label longer than the message
    ],
)
def test_malformed_questions_get_formerr(answerer: Answerer, mutate: object) -> None:
    wire = dns.message.make_query(f"web.default.svc.{Z}", "A").to_wire()
    bad = mutate(wire)  # type: ignore[operator]
    reply = _reply(answerer.handle(bad))
    assert reply.rcode() == dns.rcode.FORMERR
    assert reply.id == int.from_bytes(wire[:2], "big")


def test_non_in_class_is_refused(answerer: Answerer) -> None:
    reply = ask(answerer, "version.bind.", "TXT", rdclass="CH")
    assert reply.rcode() == dns.rcode.REFUSED


@pytest.mark.parametrize("qtype", ["AXFR", "IXFR", "MAILB", "TSIG"])
def test_meta_types_are_notimp(answerer: Answerer, qtype: str) -> None:
    assert ask(answerer, Z, qtype).rcode() == dns.rcode.NOTIMP


def test_edns_is_echoed_and_badvers_reported(answerer: Answerer) -> None:
    reply = ask(answerer, f"web.default.svc.{Z}", "A", use_edns=0, payload=4096)
    assert reply.edns == 0 and reply.payload == 1232
    reply = ask(answerer, f"web.default.svc.{Z}", "A", use_edns=1)
    assert reply.rcode() == dns.rcode.BADVERS and not reply.answer


def test_tsig_signed_query_gets_notauth(answerer: Answerer) -> None:
    query = dns.message.make_query(f"web.default.svc.{Z}", "A")
    query.use_tsig(dns.tsigkeyring.from_text({"k.": "YWJjZA=="}), keyname="k.")
    reply = _reply(answerer.handle(query.to_wire()))
    assert reply.rcode() == dns.rcode.NOTAUTH


def _big_headless(answerer: Answerer, count: int) -> None:
    eps = [endpoint(f"10.244.{i // 200}.{i % 200 + 1}") for i in range(count)]
    answerer.view.apply("ADDED", "Service", service("default", "big", "None", [("h", "TCP", 80)]))
    answerer.view.apply("ADDED", "EndpointSlice", endpoint_slice("default", "big-1", "big", eps))


def test_udp_truncates_at_512_or_the_edns_size(answerer: Answerer) -> None:
    _big_headless(answerer, 100)
    name = f"big.default.svc.{Z}"
    wire = dns.message.make_query(name, "A").to_wire()
    outcome = answerer.handle(wire, "udp")
    assert isinstance(outcome, Reply) and len(outcome.wire) <= 512
    reply = dns.message.from_wire(outcome.wire)
    assert reply.flags & dns.flags.TC
    edns = dns.message.make_query(name, "A", use_edns=0, payload=4096).to_wire()
    big = answerer.handle(edns, "udp")
    assert isinstance(big, Reply)
    full = dns.message.from_wire(big.wire)
    assert not full.flags & dns.flags.TC and len(full.answer[0]) == 100
    small = dns.message.make_query(name, "A", use_edns=0, payload=1232).to_wire()
    outcome = answerer.handle(small, "udp")
    assert isinstance(outcome, Reply) and len(outcome.wire) <= 1232 and _tc(outcome)


def test_tcp_carries_the_whole_answer(answerer: Answerer) -> None:
    _big_headless(answerer, 1000)
    wire = dns.message.make_query(f"big.default.svc.{Z}", "A").to_wire()
    outcome = answerer.handle(wire, "tcp")
    assert isinstance(outcome, Reply) and len(outcome.wire) > 4096 and not _tc(outcome)
    assert len(dns.message.from_wire(outcome.wire).answer[0]) == 1000


def _tc(reply: Reply) -> bool:
    return bool(dns.message.from_wire(reply.wire).flags & dns.flags.TC)


def test_forward_and_relay() -> None:
    answerer = Answerer(fixture_cluster(), DnsConfig(upstream="127.0.0.1:53000"))
    query = dns.message.make_query("example.com.", "A")
    outcome = answerer.handle(query.to_wire())
    assert isinstance(outcome, Forward) and outcome.limit == 512
    failed = answerer.relay(outcome, None)
    assert failed.rcode == dns.rcode.SERVFAIL
    assert dns.message.from_wire(failed.wire).id == query.id
    upstream = dns.message.make_response(query)
    upstream.answer.append(dns.rrset.from_text("example.com.", 60, "IN", "A", "192.0.2.1"))
    ok = dns.message.from_wire(answerer.relay(outcome, upstream).wire)
    assert ok.id == query.id and ok.answer[0][0].to_text() == "192.0.2.1"
    for i in range(60):  # an upstream answer too big for the client's UDP size is truncated
        upstream.answer.append(
            dns.rrset.from_text(f"n{i}.example.com.", 60, "IN", "A", f"192.0.2.{i}")
        )
    big = answerer.relay(outcome, upstream)
    assert len(big.wire) <= 512 and _tc(big)
    assert answerer.metrics.forwards["error"] == 1 and answerer.metrics.forwards["NOERROR"] == 2


def test_external_name_leaving_the_zone_is_completed_upstream() -> None:
    """CoreDNS resolves an ExternalName's target through its upstream (spec 2.5 example)."""
    answerer = Answerer(fixture_cluster(), DnsConfig(upstream="127.0.0.1:53000"))
    query = dns.message.make_query(f"Ext.team-a.svc.{Z}", "A")
    outcome = answerer.handle(query.to_wire())
    assert isinstance(outcome, Forward) and outcome.partial is not None
    asked = outcome.query.question[0]
    assert (str(asked.name), asked.rdtype) == ("www.example.com.", dns.rdatatype.A)
    upstream = dns.message.make_response(outcome.query)
    upstream.answer.append(dns.rrset.from_text("www.example.com.", 60, "IN", "A", "192.0.2.53"))
    reply = dns.message.from_wire(answerer.relay(outcome, upstream).wire)
    assert reply.id == query.id and reply.rcode() == dns.rcode.NOERROR
    assert [(str(r.name), r[0].to_text()) for r in reply.answer] == [
        (f"Ext.team-a.svc.{Z}", "www.example.com."),
        ("www.example.com.", "192.0.2.53"),
    ]
    nx = dns.message.make_response(outcome.query)
    nx.set_rcode(dns.rcode.NXDOMAIN)
    assert answerer.relay(outcome, nx).rcode == dns.rcode.NXDOMAIN  # RFC 6604: last name
    failed = dns.message.from_wire(answerer.relay(outcome, None).wire)
    assert failed.rcode() == dns.rcode.NOERROR and len(failed.answer) == 1  # CNAME kept
    cname_only = answerer.handle(dns.message.make_query(f"ext.team-a.svc.{Z}", "CNAME").to_wire())
    assert isinstance(cname_only, Reply)  # asking for the CNAME itself needs no upstream


def test_metric_labels_are_bounded() -> None:
    assert rcode_label(3) == "NXDOMAIN" and rcode_label(4000) == "other"
    assert type_label(1) == "A" and type_label(65280) == "other" and type_label(99999) == "other"


def test_metrics_count_requests_by_type_and_rcode(answerer: Answerer) -> None:
    ask(answerer, f"web.default.svc.{Z}", "A")
    ask(answerer, f"_http._tcp.web.default.svc.{Z}", "SRV")
    ask(answerer, f"nope.{Z}", "A")
    ask(answerer, f"nope.{Z}", "TYPE65280")
    ask(answerer, "example.com.", "A", proto="tcp")
    text = answerer.metrics.render()
    server = 'server="dns://127.0.0.1:5353"'
    requests = f"coredns_dns_requests_total{{{server}"
    assert f'{requests},zone="{Z}",proto="udp",family="1",type="A"}} 2' in text
    assert f'{requests},zone="{Z}",proto="udp",family="1",type="other"}} 1' in text
    assert f'{requests},zone=".",proto="tcp",family="1",type="A"}} 1' in text
    responses = f"coredns_dns_responses_total{{{server}"
    assert f'{responses},zone="{Z}",rcode="NXDOMAIN",plugin="kubernetes"}} 2' in text
    assert 'rcode="REFUSED"' in text
    assert answerer.metrics.total_requests() == 5
