"""Counters of the DNS component, rendered as Prometheus text like CoreDNS's.

Names and labels follow CoreDNS's `prometheus` plugin (coredns.io/plugins/metrics):
``coredns_dns_requests_total{server,zone,proto,family,type}``,
``coredns_dns_responses_total{server,zone,rcode,plugin}`` and
``coredns_dns_request_duration_seconds``; knemu adds ``knemu_dns_dropped_total{reason}`` for
queries it could not answer at all.  Label values come from small fixed sets (unknown query
types count as "other", as CoreDNS does), so a flood of odd queries cannot grow memory.
"""

from __future__ import annotations

import functools
from collections import Counter

import dns.rcode
import dns.rdatatype

# The types CoreDNS reports by name (plugin/metrics/vars: monitor.go); the rest are "other".
_REPORTED_TYPES = frozenset(
    dns.rdatatype.to_text(t)
    for t in (
        dns.rdatatype.A,
        dns.rdatatype.AAAA,
        dns.rdatatype.NS,
        dns.rdatatype.PTR,
        dns.rdatatype.SOA,
        dns.rdatatype.SRV,
        dns.rdatatype.TXT,
        dns.rdatatype.CNAME,
        dns.rdatatype.MX,
        dns.rdatatype.ANY,
        dns.rdatatype.AXFR,
        dns.rdatatype.IXFR,
        dns.rdatatype.HTTPS,
        dns.rdatatype.SVCB,
        dns.rdatatype.DS,
        dns.rdatatype.DNSKEY,
        dns.rdatatype.NSEC,
        dns.rdatatype.CAA,
    )
)
_KNOWN_RCODES = frozenset(int(r) for r in dns.rcode.Rcode)
# Upper bounds of the latency histogram, seconds (CoreDNS uses powers of two from 0.25 ms).
DURATION_BUCKETS_S = (0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128)
_FAMILY_TEXT = {1: "1", 2: "2"}
DROP_REASONS = (
    "short-header",
    "not-a-query",
    "forward-overload",
    "tcp-connection-limit",
    "tcp-bad-length",
    "tcp-timeout",
)


@functools.lru_cache(maxsize=4096)  # pure; the enum lookups cost microseconds per query
def rcode_label(rcode: int) -> str:
    """Rcode names for labels; an upstream's unassigned (extended) rcode counts as "other"."""
    if rcode not in _KNOWN_RCODES:
        return "other"
    return dns.rcode.to_text(dns.rcode.Rcode(rcode))


@functools.lru_cache(maxsize=4096)
def type_label(rdtype: int) -> str:
    text = (
        dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype))
        if 0 <= rdtype <= 65535
        else "other"
    )
    return text if text in _REPORTED_TYPES else "other"


class DnsMetrics:
    """Counters only; the server adds them up, ``render()`` prints them."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.requests: Counter[tuple[str, str, str, str]] = Counter()  # zone, proto, family, type
        self.responses: Counter[tuple[str, str, str]] = Counter()  # zone, rcode, plugin
        self.dropped: Counter[str] = Counter()
        self.forwards: Counter[str] = Counter()  # rcode or "error" of upstream exchanges
        self.duration_buckets = [0] * len(DURATION_BUCKETS_S)
        self.duration_count = 0
        self.duration_sum_s = 0.0
        self.tcp_connections = 0

    def count_request(self, zone: str, proto: str, family: int, rdtype: int) -> None:
        self.requests[(zone, proto, str(family), type_label(rdtype))] += 1

    def count_cached(
        self, zone: str, proto: str, family: int, qtype: str, response: tuple[str, str, str]
    ) -> None:
        """A query answered from the wire cache: the labels were worked out when it was stored
        (``qtype`` is a ``type_label``, ``response`` a key of ``responses``)."""
        self.requests[(zone, proto, _FAMILY_TEXT.get(family) or str(family), qtype)] += 1
        self.responses[response] += 1

    def count_response(self, zone: str, rcode: str, plugin: str) -> None:
        self.responses[(zone, rcode, plugin)] += 1

    def count_drop(self, reason: str) -> None:
        assert reason in DROP_REASONS, reason
        self.dropped[reason] += 1

    def observe_duration(self, seconds: float) -> None:
        self.duration_count += 1
        self.duration_sum_s += seconds
        for i, bound in enumerate(DURATION_BUCKETS_S):
            if seconds <= bound:
                self.duration_buckets[i] += 1

    def total_requests(self) -> int:
        return sum(self.requests.values())

    def render(self) -> str:
        """Prometheus text exposition format 0.0.4."""
        out: list[str] = []
        srv = f'server="{self.server}"'
        _family(
            out,
            "coredns_dns_requests_total",
            "counter",
            "DNS requests per zone, protocol, family and type.",
        )
        for (zone, proto, fam, qtype), n in sorted(self.requests.items()):
            out.append(
                f'coredns_dns_requests_total{{{srv},zone="{zone}",proto="{proto}",'
                f'family="{fam}",type="{qtype}"}} {n}'
            )
        _family(
            out,
            "coredns_dns_responses_total",
            "counter",
            "DNS responses per zone, rcode and plugin.",
        )
        for (zone, rcode, plugin), n in sorted(self.responses.items()):
            out.append(
                f'coredns_dns_responses_total{{{srv},zone="{zone}",rcode="{rcode}",'
                f'plugin="{plugin}"}} {n}'
            )
        self._render_duration(out, srv)
        _family(out, "coredns_forward_responses_total", "counter", "Upstream exchanges by result.")
        for result, n in sorted(self.forwards.items()):
            out.append(f'coredns_forward_responses_total{{to="upstream",rcode="{result}"}} {n}')
        _family(out, "knemu_dns_dropped_total", "counter", "Queries dropped unanswered, by reason.")
        for reason in DROP_REASONS:
            out.append(f'knemu_dns_dropped_total{{{srv},reason="{reason}"}} {self.dropped[reason]}')
        _family(out, "knemu_dns_tcp_connections", "gauge", "Open DNS-over-TCP connections.")
        out.append(f"knemu_dns_tcp_connections{{{srv}}} {self.tcp_connections}")
        return "\n".join(out) + "\n"

    def _render_duration(self, out: list[str], srv: str) -> None:
        name = "coredns_dns_request_duration_seconds"
        _family(out, name, "histogram", "Time to answer a query, seconds.")
        for bound, n in zip(DURATION_BUCKETS_S, self.duration_buckets, strict=True):
            out.append(f'{name}_bucket{{{srv},le="{bound}"}} {n}')
        out.append(f'{name}_bucket{{{srv},le="+Inf"}} {self.duration_count}')
        out.append(f"{name}_sum{{{srv}}} {self.duration_sum_s:.6f}")
        out.append(f"{name}_count{{{srv}}} {self.duration_count}")


def _family(out: list[str], name: str, kind: str, text: str) -> None:
    out.append(f"# HELP {name} {text}")
    out.append(f"# TYPE {name} {kind}")
