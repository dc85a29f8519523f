"""The sans-I/O answer core: query bytes in, one outcome out.

Theory of operation.  ``Answerer.handle(wire, proto, family)`` never raises on input.  It reads
the fixed 12-byte header first (RFC 1035 4.1.1) so that it can refuse cheaply what it will not
parse.  Fewer than 12 bytes is a counted :class:`Drop` (a reply would be larger than the
datagram, a reflection amplifier; miekg/dns under CoreDNS ignores these too), and so is a
message with QR set (a response; answering it could loop).  An opcode other than QUERY is
NOTIMP and QDCOUNT != 1 is FORMERR, both as a header-only reply.  Everything else goes through
dnspython's parser; a message it rejects is FORMERR.  Then, in order: a TSIG-signed query is
NOTAUTH (no keys here, RFC 8945 5.2), EDNS version > 0 is BADVERS (RFC 6891 6.1.3), a class
other than IN is REFUSED, a meta query type (AXFR, IXFR, TSIG, ...) other than ANY is NOTIMP.

Names in the zone are answered authoritatively from the view through :class:`Zone` (SERVFAIL
until the watch has synced once); negative answers carry the zone SOA (RFC 2308).  Reverse names
the cluster owns get PTRs.  Any other name becomes a :class:`Forward` for the adapter to send
upstream and hand back through :meth:`Answerer.relay`, or REFUSED when no upstream is set.

Replies over UDP fit 512 bytes, or the requestor's EDNS payload size (RFC 6891 6.2.5); what
does not fit is cut at an RRset boundary with TC set (RFC 2181 9), so the client retries over
TCP, where up to 65535 bytes go out.

Wire cache.  Replies the zone logic builds are kept as bytes and reused for the same query
(``knemu.dns.wire_cache`` explains how, and why that is exact).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.reversename

from knemu.config import DnsConfig
from knemu.dns.metrics import DnsMetrics, rcode_label, type_label
from knemu.dns.view import ClusterView
from knemu.dns.wire_cache import HEADER_BYTES, Cached, WireCache, cache_key, cut
from knemu.dns.zone import Zone

UDP_MIN_BYTES = 512  # RFC 1035 4.2.1: the limit without EDNS
UDP_MAX_BYTES = 4096  # cap on what we send over UDP even if a client offers more
OUR_PAYLOAD_BYTES = 1232  # advertised EDNS payload (DNS flag day 2020: no fragmentation)
TCP_MAX_BYTES = 65535
_QR = 0x8000
_REVERSE = (dns.reversename.ipv4_reverse_domain, dns.reversename.ipv6_reverse_domain)
ROOT_ZONE = "."
_NO_CHASE = (dns.rdatatype.CNAME, dns.rdatatype.ANY)


@dataclass(frozen=True)
class Reply:
    """Send ``wire`` back to the client."""

    wire: bytes
    rcode: dns.rcode.Rcode


@dataclass(frozen=True)
class Forward:
    """Resolve ``query`` upstream and pass the answer to :meth:`Answerer.relay`.

    ``partial`` is set when an ExternalName CNAME leaves the zone: our answer so far, which
    the upstream's records for the CNAME target complete (as CoreDNS resolves the target).
    """

    query: dns.message.Message
    proto: str
    limit: int  # the most bytes the client takes on its transport
    partial: dns.message.Message | None = None


@dataclass(frozen=True)
class Drop:
    """Send nothing; ``reason`` is counted in knemu_dns_dropped_total."""

    reason: str


Outcome = Reply | Forward | Drop


class Answerer:
    """Answers DNS queries for one cluster zone from a :class:`ClusterView`."""

    def __init__(
        self, view: ClusterView, config: DnsConfig, metrics: DnsMetrics | None = None
    ) -> None:
        self.view = view
        self.zone = Zone(view, config.zone, config.ttl_s, config.pods_mode)
        self.forwarding = bool(config.upstream)
        self.metrics = metrics if metrics is not None else DnsMetrics(f"dns://{config.listen}")
        self._zone_label = self.zone.origin.to_text()
        self.cache = WireCache(view.generation)

    # ---- entry points -------------------------------------------------------------------

    def handle(self, wire: bytes, proto: str = "udp", family: int = 1) -> Outcome:
        """One query in; a reply, a forward request or a counted drop out.  Never raises."""
        keyed = cache_key(wire, proto)
        if keyed is None:
            return self._handle(wire, proto, family, None)
        cached = self.cache.get(keyed[0], self.view.generation)
        if cached is None:
            return self._handle(wire, proto, family, keyed)
        self.metrics.count_cached(cached.zone, proto, family, cached.qtype, cached.response)
        question = wire[HEADER_BYTES : keyed[1]]
        return Reply(wire[:2] + cached.head + question + cached.after_question(), cached.rcode)

    def cache_statistics(self) -> dict[str, int]:
        return self.cache.statistics()

    def _handle(
        self, wire: bytes, proto: str, family: int, keyed: tuple[bytes, int] | None
    ) -> Outcome:
        """The parsing path; ``keyed`` (cache key, question end) stores what it may reuse."""
        if len(wire) < HEADER_BYTES:
            return self._drop("short-header")
        qid = int.from_bytes(wire[0:2], "big")
        flags = int.from_bytes(wire[2:4], "big")
        if flags & _QR:
            return self._drop("not-a-query")
        if dns.opcode.from_flags(flags) != dns.opcode.QUERY:
            return self._header_reply(qid, flags, dns.rcode.NOTIMP)
        if int.from_bytes(wire[4:6], "big") != 1:
            return self._header_reply(qid, flags, dns.rcode.FORMERR)
        try:
            # keyring=False: parse TSIG without verifying; signed queries get NOTAUTH below.
            query = dns.message.from_wire(wire, keyring=False)
        except Exception:  # untrusted bytes: any parser failure is the client's FORMERR
            return self._header_reply(qid, flags, dns.rcode.FORMERR)
        question = query.question[0]
        in_zone = question.name.is_subdomain(self.zone.origin)
        zone_label = self._zone_label if in_zone else ROOT_ZONE
        self.metrics.count_request(zone_label, proto, family, question.rdtype)
        limit = _udp_limit(query) if proto == "udp" else TCP_MAX_BYTES
        response = self._respond(query, in_zone)
        if response is None:
            return Forward(query, proto, limit)
        chase = self._chase(response)
        if chase is not None:
            return Forward(chase, proto, limit, partial=response)
        reply = self._render(response, limit, zone_label, "kubernetes")
        if keyed is not None and self.view.synced:
            self._store(keyed, wire, reply, response, zone_label)
        return reply

    def relay(self, forward: Forward, upstream: dns.message.Message | None) -> Reply:
        """The upstream's answer to a :class:`Forward` (None: it failed -> SERVFAIL)."""
        if forward.partial is not None:
            return self._complete(forward.partial, upstream, forward.limit)
        if upstream is None:
            self.metrics.forwards["error"] += 1
            response = dns.message.make_response(forward.query, recursion_available=True)
            response.set_rcode(dns.rcode.SERVFAIL)
        else:
            response = upstream
            response.id = forward.query.id
            self.metrics.forwards[rcode_label(upstream.rcode())] += 1
        return self._render(response, forward.limit, ROOT_ZONE, "forward")

    def _chase(self, response: dns.message.Message) -> dns.message.Message | None:
        """The upstream query for a CNAME chain that left the zone, if there is an upstream."""
        if not self.forwarding or not response.answer or response.rcode() != dns.rcode.NOERROR:
            return None
        last = response.answer[-1]
        qtype = response.question[0].rdtype
        if last.rdtype != dns.rdatatype.CNAME or qtype in _NO_CHASE:
            return None
        target = last[0].target
        if target.is_subdomain(self.zone.origin):
            return None  # the chain stopped inside the zone (too long): nothing to ask
        return dns.message.make_query(target, qtype, id=response.id)

    def _complete(
        self, partial: dns.message.Message, upstream: dns.message.Message | None, limit: int
    ) -> Reply:
        response = copy.copy(partial)  # the Forward stays as it was: relay may be retried
        response.sections = [list(section) for section in partial.sections]
        if upstream is None:
            self.metrics.forwards["error"] += 1  # keep the CNAME: the client may retry it
        else:
            self.metrics.forwards[rcode_label(upstream.rcode())] += 1
            response.answer.extend(upstream.answer)
            # RFC 6604 s3: the rcode is that of the last name in the chain.
            rcode = upstream.rcode()
            response.set_rcode(rcode if rcode <= 0xF else dns.rcode.SERVFAIL)
        return self._render(response, limit, self._zone_label, "kubernetes")

    def answer(self, query: dns.message.Message) -> dns.message.Message | None:
        """The response message for a parsed query (None: to be forwarded).  For tests."""
        return self._respond(query, query.question[0].name.is_subdomain(self.zone.origin))

    # ---- decisions ----------------------------------------------------------------------

    def _respond(self, query: dns.message.Message, in_zone: bool) -> dns.message.Message | None:
        question = query.question[0]
        response = dns.message.make_response(
            query, recursion_available=self.forwarding, our_payload=OUR_PAYLOAD_BYTES
        )
        rcode = self._precheck(query, question.rdclass, question.rdtype)
        if rcode is not None:
            response.set_rcode(rcode)
            return response
        if in_zone:
            self._answer_zone(response, question.name, question.rdtype)
            return response
        if question.name.is_subdomain(_REVERSE[0]) or question.name.is_subdomain(_REVERSE[1]):
            if not self.view.synced:
                response.set_rcode(dns.rcode.SERVFAIL)
                return response
            lookup = self.zone.reverse(question.name, question.rdtype)
            if lookup is not None:
                response.flags |= dns.flags.AA
                response.answer.extend(lookup.answer)
                return response
        if self.forwarding:
            return None
        # Not our zone and nowhere to send it (RFC 1035 4.1.1: REFUSED for policy reasons).
        response.set_rcode(dns.rcode.REFUSED)
        return response

    def _precheck(
        self, query: dns.message.Message, rdclass: int, rdtype: dns.rdatatype.RdataType
    ) -> dns.rcode.Rcode | None:
        if query.had_tsig:
            return dns.rcode.NOTAUTH
        if query.edns > 0:
            return dns.rcode.BADVERS
        if rdclass != dns.rdataclass.IN:
            return dns.rcode.REFUSED
        if dns.rdatatype.is_metatype(rdtype) and rdtype != dns.rdatatype.ANY:
            return dns.rcode.NOTIMP
        return None

    def _answer_zone(self, response: dns.message.Message, qname: dns.name.Name, qtype: int) -> None:
        if not self.view.synced:
            # CoreDNS answers SERVFAIL until its informers have synced.
            response.set_rcode(dns.rcode.SERVFAIL)
            return
        lookup = self.zone.lookup(qname, qtype)
        response.flags |= dns.flags.AA
        response.set_rcode(lookup.rcode)
        response.answer.extend(lookup.answer)
        response.additional.extend(lookup.additional)
        if lookup.negative:
            response.authority.append(self.zone.soa())

    # ---- output -------------------------------------------------------------------------

    def _render(self, response: dns.message.Message, limit: int, zone: str, plugin: str) -> Reply:
        wire = response.to_wire(max_size=limit, prefer_truncation=True)
        rcode = response.rcode()
        self.metrics.count_response(zone, rcode_label(rcode), plugin)
        return Reply(wire, rcode)

    def _store(
        self,
        keyed: tuple[bytes, int],
        query: bytes,
        reply: Reply,
        response: dns.message.Message,
        zone: str,
    ) -> None:
        key, end = keyed
        wire = reply.wire
        # A hit splices the query's question into the reply: it must sit where the query's
        # does, as the only question, byte for byte (dnspython echoes the name as sent).
        if wire[4:6] != b"\x00\x01" or wire[HEADER_BYTES:end] != query[HEADER_BYTES:end]:
            return
        pieces = cut(wire, end, response)
        if pieces is None:
            return
        tail = pieces[0] if len(pieces) == 1 and isinstance(pieces[0], bytes) else None
        counter = (zone, rcode_label(reply.rcode), "kubernetes")
        qtype = type_label(response.question[0].rdtype)
        size = len(key) + len(wire)
        entry = Cached(wire[2:HEADER_BYTES], tail, pieces, reply.rcode, zone, qtype, counter, size)
        self.cache.put(key, entry)

    def _header_reply(self, qid: int, query_flags: int, rcode: dns.rcode.Rcode) -> Reply:
        """A reply with no sections: all a malformed or unsupported query can get."""
        reply = dns.message.Message(id=qid)
        keep = query_flags & (dns.flags.RD | 0x7800)  # RD and the opcode (RFC 1035 4.1.1)
        reply.flags = dns.flags.QR | keep
        reply.set_rcode(rcode)
        self.metrics.count_response(ROOT_ZONE, rcode_label(rcode), "")
        return Reply(reply.to_wire(), rcode)

    def _drop(self, reason: str) -> Drop:
        self.metrics.count_drop(reason)
        return Drop(reason)


def _udp_limit(query: dns.message.Message) -> int:
    if query.edns < 0:
        return UDP_MIN_BYTES
    return max(UDP_MIN_BYTES, min(query.payload, UDP_MAX_BYTES))
