"""Answer-core vectors: every record type and every negative case against the fixture cluster.

Each vector is (name, type, rcode, answer records); an empty answer in the zone must carry the
zone SOA in the authority section (RFC 2308), a positive one must not.
"""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import pytest
from dns_cluster import additional, answers, ask, fixture_cluster

from knemu.config import DnsConfig
from knemu.dns.answer import Answerer

Z = "cluster.local."
NOERROR, NXDOMAIN = "NOERROR", "NXDOMAIN"
V6_PTR = "2.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.0.d.f.ip6.arpa."

VECTORS: list[tuple[str, str, str, set[str]]] = [
    # spec 2.2: schema version
    (f"dns-version.{Z}", "TXT", NOERROR, {f'dns-version.{Z} TXT "1.1.0"'}),
    (f"dns-version.{Z}", "A", NOERROR, set()),
    # spec 2.3.1: ClusterIP A; AAAA of an IPv4-only service is NODATA
    (f"web.default.svc.{Z}", "A", NOERROR, {f"web.default.svc.{Z} A 10.96.0.20"}),
    (f"web.default.svc.{Z}", "AAAA", NOERROR, set()),
    (f"web.default.svc.{Z}", "TXT", NOERROR, set()),
    (f"dual.default.svc.{Z}", "AAAA", NOERROR, {f"dual.default.svc.{Z} AAAA fd00:96::22"}),
    (f"dual.default.svc.{Z}", "A", NOERROR, {f"dual.default.svc.{Z} A 10.96.0.22"}),
    # a ClusterIP service without endpoints still answers its ClusterIP
    (f"nobody.team-a.svc.{Z}", "A", NOERROR, {f"nobody.team-a.svc.{Z} A 10.96.0.30"}),
    # spec 2.3.2: SRV for named ports, target the service
    (
        f"_http._tcp.web.default.svc.{Z}",
        "SRV",
        NOERROR,
        {f"_http._tcp.web.default.svc.{Z} SRV 0 100 80 web.default.svc.{Z}"},
    ),
    (f"_http._udp.web.default.svc.{Z}", "SRV", NXDOMAIN, set()),
    (f"_nope._tcp.web.default.svc.{Z}", "SRV", NXDOMAIN, set()),
    (f"_http._tcp.web.default.svc.{Z}", "A", NOERROR, set()),
    (f"_tcp.web.default.svc.{Z}", "A", NOERROR, set()),  # empty non-terminal
    (f"_udp.web.default.svc.{Z}", "A", NXDOMAIN, set()),
    # unnamed ports have no _port._proto SRV; the service-name SRV lists every port (CoreDNS)
    (f"_tcp.plain.default.svc.{Z}", "A", NXDOMAIN, set()),
    (
        f"plain.default.svc.{Z}",
        "SRV",
        NOERROR,
        {f"plain.default.svc.{Z} SRV 0 100 8080 plain.default.svc.{Z}"},
    ),
    # spec 2.3.3: PTR of a ClusterIP
    (
        "20.0.96.10.in-addr.arpa.",
        "PTR",
        NOERROR,
        {f"20.0.96.10.in-addr.arpa. PTR web.default.svc.{Z}"},
    ),
    (V6_PTR, "PTR", NOERROR, {f"{V6_PTR} PTR dual.default.svc.{Z}"}),
    # spec 2.4.1: headless A = ready endpoints only; per-hostname A
    (
        f"db.team-a.svc.{Z}",
        "A",
        NOERROR,
        {f"db.team-a.svc.{Z} A 10.244.1.5", f"db.team-a.svc.{Z} A 10.244.2.6"},
    ),
    (f"db-0.db.team-a.svc.{Z}", "A", NOERROR, {f"db-0.db.team-a.svc.{Z} A 10.244.1.5"}),
    (f"db-2.db.team-a.svc.{Z}", "A", NXDOMAIN, set()),  # not ready
    (f"db-0.db.team-a.svc.{Z}", "AAAA", NOERROR, set()),
    # endpoints without hostname are named by their dashed IP (CoreDNS)
    (
        f"10-244-1-10.workers.team-a.svc.{Z}",
        "A",
        NOERROR,
        {f"10-244-1-10.workers.team-a.svc.{Z} A 10.244.1.10"},
    ),
    # headless with no ready endpoints: NXDOMAIN (spec 2.4.1), SRV too
    (f"empty.team-a.svc.{Z}", "A", NXDOMAIN, set()),
    (f"_http._tcp.empty.team-a.svc.{Z}", "SRV", NXDOMAIN, set()),
    # publishNotReadyAddresses: the unready endpoint is published
    (f"warm.team-a.svc.{Z}", "A", NOERROR, {f"warm.team-a.svc.{Z} A 10.244.1.30"}),
    # spec 2.4.2: SRV per ready endpoint, target its hostname
    (
        f"_pg._tcp.db.team-a.svc.{Z}",
        "SRV",
        NOERROR,
        {
            f"_pg._tcp.db.team-a.svc.{Z} SRV 0 50 5432 db-0.db.team-a.svc.{Z}",
            f"_pg._tcp.db.team-a.svc.{Z} SRV 0 50 5432 db-1.db.team-a.svc.{Z}",
        },
    ),
    (
        f"_http._tcp.workers.team-a.svc.{Z}",
        "SRV",
        NOERROR,
        {
            f"_http._tcp.workers.team-a.svc.{Z} SRV 0 50 8080 10-244-1-10.workers.team-a.svc.{Z}",
            f"_http._tcp.workers.team-a.svc.{Z} SRV 0 50 8080 10-244-2-11.workers.team-a.svc.{Z}",
        },
    ),
    # spec 2.4.3: PTR for a headless endpoint with a hostname
    (
        "6.2.244.10.in-addr.arpa.",
        "PTR",
        NOERROR,
        {f"6.2.244.10.in-addr.arpa. PTR db-1.db.team-a.svc.{Z}"},
    ),
    # pod hostname + subdomain naming a headless service
    (f"box.sub.team-a.svc.{Z}", "A", NOERROR, {f"box.sub.team-a.svc.{Z} A 10.244.2.40"}),
    (
        "40.2.244.10.in-addr.arpa.",
        "PTR",
        NOERROR,
        {f"40.2.244.10.in-addr.arpa. PTR box.sub.team-a.svc.{Z}"},
    ),
    # spec 2.5: ExternalName -> CNAME; inside the zone the chain is chased
    (f"ext.team-a.svc.{Z}", "A", NOERROR, {f"ext.team-a.svc.{Z} CNAME www.example.com."}),
    (f"ext.team-a.svc.{Z}", "CNAME", NOERROR, {f"ext.team-a.svc.{Z} CNAME www.example.com."}),
    (
        f"alias.team-a.svc.{Z}",
        "A",
        NOERROR,
        {f"alias.team-a.svc.{Z} CNAME web.default.svc.{Z}", f"web.default.svc.{Z} A 10.96.0.20"},
    ),
    (f"_http._tcp.ext.team-a.svc.{Z}", "SRV", NXDOMAIN, set()),
    # spec 2.6: pod A records (pods insecure)
    (f"10-244-9-9.team-a.pod.{Z}", "A", NOERROR, {f"10-244-9-9.team-a.pod.{Z} A 10.244.9.9"}),
    (f"fd00--1.team-a.pod.{Z}", "AAAA", NOERROR, {f"fd00--1.team-a.pod.{Z} AAAA fd00::1"}),
    (f"10-244-9-9.team-a.pod.{Z}", "AAAA", NOERROR, set()),
    (f"10-244-9.team-a.pod.{Z}", "A", NXDOMAIN, set()),
    (f"10-244-9-300.team-a.pod.{Z}", "A", NXDOMAIN, set()),
    (f"team-a.pod.{Z}", "A", NOERROR, set()),
    (f"pod.{Z}", "A", NOERROR, set()),
    # structure: empty non-terminals and the apex
    (f"svc.{Z}", "A", NOERROR, set()),
    (f"team-a.svc.{Z}", "A", NOERROR, set()),
    (f"ghost.svc.{Z}", "A", NXDOMAIN, set()),
    (f"ghost.default.svc.{Z}", "A", NXDOMAIN, set()),
    (f"a.b.web.default.svc.{Z}", "A", NXDOMAIN, set()),
    (f"x.web.default.svc.{Z}", "A", NXDOMAIN, set()),
    (f"nope.{Z}", "A", NXDOMAIN, set()),
    (Z, "A", NOERROR, set()),
    (Z, "NS", NOERROR, {f"{Z} NS ns.dns.{Z}"}),
    (f"ns.dns.{Z}", "A", NOERROR, {f"ns.dns.{Z} A 10.96.0.10"}),
    (f"dns.{Z}", "A", NOERROR, set()),
]


@pytest.fixture(scope="module")
def answerer() -> Answerer:
    return Answerer(fixture_cluster(), DnsConfig())


@pytest.mark.parametrize(("name", "rdtype", "rcode", "expected"), VECTORS)
def test_vector(answerer: Answerer, name: str, rdtype: str, rcode: str, expected: set[str]) -> None:
    reply = ask(answerer, name, rdtype)
    assert dns.rcode.to_text(reply.rcode()) == rcode
    assert answers(reply) == expected
    assert reply.flags & dns.flags.AA
    soa = [r for r in reply.authority if r.rdtype == dns.rdatatype.SOA]
    in_zone = name.lower().endswith(Z)
    assert bool(soa) == (in_zone and not expected), "SOA in authority exactly for negatives"
    for rrset in reply.answer:
        assert rrset.ttl == 5


def test_soa_fields(answerer: Answerer) -> None:
    reply = ask(answerer, Z, "SOA")
    (soa,) = reply.answer[0]
    assert str(soa.mname) == f"ns.dns.{Z}" and str(soa.rname) == f"hostmaster.{Z}"
    assert (soa.refresh, soa.retry, soa.expire, soa.minimum) == (7200, 1800, 86400, 5)
    assert soa.serial == answerer.view.serial > 0


def test_case_insensitive_and_echoed(answerer: Answerer) -> None:
    reply = ask(answerer, "WeB.DeFault.SVC.Cluster.LOCAL.", "A")
    assert answers(reply) == {"WeB.DeFault.SVC.Cluster.LOCAL. A 10.96.0.20"}
    assert str(reply.answer[0].name) == "WeB.DeFault.SVC.Cluster.LOCAL."


def test_srv_additional_section(answerer: Answerer) -> None:
    reply = ask(answerer, f"_pg._tcp.db.team-a.svc.{Z}", "SRV")
    assert additional(reply) == {
        f"db-0.db.team-a.svc.{Z} A 10.244.1.5",
        f"db-1.db.team-a.svc.{Z} A 10.244.2.6",
    }
    reply = ask(answerer, f"_http._tcp.web.default.svc.{Z}", "SRV")
    assert additional(reply) == {f"web.default.svc.{Z} A 10.96.0.20"}


def test_ns_glue(answerer: Answerer) -> None:
    assert additional(ask(answerer, Z, "NS")) == {f"ns.dns.{Z} A 10.96.0.10"}


def test_any_returns_every_type(answerer: Answerer) -> None:
    reply = ask(answerer, f"dual.default.svc.{Z}", "ANY")
    assert {r.split()[1] for r in answers(reply)} == {"A", "AAAA", "SRV"}


FORWARDING = DnsConfig(upstream="127.0.0.1:53000")


def test_name_without_zone_is_not_ours(answerer: Answerer) -> None:
    """`<svc>.<ns>.svc` alone is outside the zone: forwarded or REFUSED."""
    query = dns.message.make_query("web.default.svc.", "A")
    assert Answerer(fixture_cluster(), FORWARDING).answer(query) is None  # forwarded
    reply = ask(answerer, "web.default.svc.", "A")
    assert reply.rcode() == dns.rcode.REFUSED and not reply.answer
    assert not reply.flags & dns.flags.AA


def test_unknown_reverse_name_falls_through(answerer: Answerer) -> None:
    forwarding = Answerer(fixture_cluster(), FORWARDING)
    assert forwarding.answer(dns.message.make_query("9.9.9.10.in-addr.arpa.", "PTR")) is None
    assert ask(answerer, "9.9.9.10.in-addr.arpa.", "PTR").rcode() == dns.rcode.REFUSED


def test_ttl_comes_from_the_config() -> None:
    answerer = Answerer(fixture_cluster(), DnsConfig(ttl_s=30))
    reply = ask(answerer, f"_pg._tcp.db.team-a.svc.{Z}", "SRV")
    assert {r.ttl for r in reply.answer + reply.additional} == {30}
    negative = ask(answerer, f"nope.{Z}")
    (soa,) = negative.authority[0]
    assert negative.authority[0].ttl == 30 and soa.minimum == 30
