"""The records of the cluster zone, computed from the view on each query.

Names under ``<zone>`` (Kubernetes DNS-Based Service Discovery, kubernetes/dns
docs/specification.md, schema 1.1.0, and CoreDNS's kubernetes plugin):

===========================================  ==============================================
``<zone>``                                   SOA, NS ``ns.dns.<zone>`` (the apex)
``dns-version.<zone>``                       TXT "1.1.0" (spec 2.2)
``ns.dns.<zone>``                            A/AAAA of kube-system/kube-dns, if it exists
``svc.<zone>``, ``pod.<zone>``, ``dns.<zone>`` empty non-terminals (NODATA)
``<ns>.svc.<zone>``                          empty non-terminal when the namespace exists
``<svc>.<ns>.svc.<zone>``                    A/AAAA ClusterIP(s) (2.3.1), or one per published
                                             headless endpoint (2.4.1), or CNAME (2.5); SRV
                                             for every port (CoreDNS extension)
``<host>.<svc>.<ns>.svc.<zone>``             A/AAAA of a headless endpoint (2.4.1); host is
                                             its hostname or its dashed IP (CoreDNS)
``_<port>._<proto>.<svc>.<ns>.svc.<zone>``   SRV per named port (2.3.2, 2.4.2); headless
                                             targets carry the endpoint (target) port
``<a-b-c-d>.<ns>.pod.<zone>``                A of the pod IP (2.6; CoreDNS ``pods`` mode)
===========================================  ==============================================

A headless service with no published endpoint does not exist (NXDOMAIN, spec 2.4.1).  Reverse
names (``in-addr.arpa``/``ip6.arpa``) are answered for ClusterIPs (2.3.3) and headless endpoints
with a hostname (2.4.3); other reverse names are not ours (the caller forwards them, as CoreDNS's
``fallthrough in-addr.arpa ip6.arpa`` does).  An ExternalName CNAME is chased while it stays
in the zone; where it leaves, the answerer asks the upstream (knemu.dns.answer).

Records derived from a service (its names, A/AAAA/SRV rdatas) are memoised on the service's
immutable ``ServiceRecord``, which the view replaces whenever the watch changes the service, so
they never outlive the data they come from; each answer copies them under the question's name.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import dns.exception
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset
from dns.rdatatype import AAAA, ANY, CNAME, NS, PTR, SOA, SRV, TXT, A
from dns.rdtypes.ANY.CNAME import CNAME as CnameRdata
from dns.rdtypes.ANY.NS import NS as NsRdata
from dns.rdtypes.ANY.PTR import PTR as PtrRdata
from dns.rdtypes.ANY.SOA import SOA as SoaRdata
from dns.rdtypes.ANY.TXT import TXT as TxtRdata
from dns.rdtypes.IN.A import A as ARdata
from dns.rdtypes.IN.AAAA import AAAA as AaaaRdata
from dns.rdtypes.IN.SRV import SRV as SrvRdata

from knemu.dns.view import CLUSTER_IP, EXTERNAL_NAME, HEADLESS, ClusterView, Port, ServiceRecord

IN = dns.rdataclass.IN
SCHEMA_VERSION = "1.1.0"
DNS_SERVICE = ("kube-system", "kube-dns")
MAX_CNAME_CHAIN = 8  # bound on chasing ExternalName CNAMEs inside the zone
# SOA timers as CoreDNS's kubernetes plugin sets them (plugin/kubernetes/kubernetes.go).
SOA_REFRESH_S, SOA_RETRY_S, SOA_EXPIRE_S = 7200, 1800, 86400
POD_MODES = ("insecure", "verified", "disabled")

# rdtype -> RRset template; the owner is set per answer (it echoes the question's case).
Records = dict[dns.rdatatype.RdataType, dns.rrset.RRset]
T = TypeVar("T")


def _rdata(cls: Callable[..., dns.rdata.Rdata], rdtype: int, *fields: Any) -> dns.rdata.Rdata:
    """Build one IN-class rdata through dnspython's typed constructors (they validate)."""
    return cls(IN, rdtype, *fields)


@dataclass
class Node:
    """What exists at one name: RRset templates of the asked type(s), a CNAME target, extra
    records for the additional section.  ``None`` instead of a Node means NXDOMAIN."""

    records: Records = field(default_factory=dict)
    cname: dns.name.Name | None = None
    additional: list[dns.rrset.RRset] = field(default_factory=list)


@dataclass
class Lookup:
    """The outcome of looking a name up: rcode and sections (SOA added by the caller)."""

    rcode: dns.rcode.Rcode = dns.rcode.NOERROR
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    additional: list[dns.rrset.RRset] = field(default_factory=list)
    negative: bool = False  # NXDOMAIN or NODATA inside the zone: put the SOA in authority


def _want(qtype: int, rdtype: dns.rdatatype.RdataType) -> bool:
    return qtype in (rdtype, ANY)


class Zone:
    """Looks names up in the cluster zone; pure (no clock, no I/O)."""

    def __init__(self, view: ClusterView, zone: str, ttl_s: int, pods_mode: str) -> None:
        if pods_mode not in POD_MODES:
            raise ValueError(f"pods mode {pods_mode!r}: use one of {POD_MODES}")
        self.view = view
        self.origin = dns.name.from_text(zone.lower())
        self.ttl_s = ttl_s
        self.pods_mode = pods_mode
        self._soa: tuple[int, dns.rrset.RRset] | None = None
        self._ns_name = self._name("ns", "dns")
        self._hostmaster = self._name("hostmaster")
        self._handlers: dict[str, Callable[[list[str], int], Node | None]] = {
            "svc": self._svc,
            "pod": self._pod,
            "dns": self._dns,
            "dns-version": self._version,
        }

    # ---- helpers ------------------------------------------------------------------------

    def _name(self, *labels: str) -> dns.name.Name:
        return dns.name.Name(tuple(lb.encode() for lb in labels) + self.origin.labels)

    def rrset(
        self,
        owner: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        rdatas: Iterable[dns.rdata.Rdata],
    ) -> dns.rrset.RRset:
        rrs = dns.rrset.RRset(owner, IN, rdtype)
        for rd in rdatas:
            rrs.add(rd, self.ttl_s)
        return rrs

    def soa(self) -> dns.rrset.RRset:
        """Zone SOA; its minimum (negative-caching TTL, RFC 2308 s5) is the record TTL."""
        if self._soa is not None and self._soa[0] == self.view.serial:
            return self._soa[1]
        rd = _rdata(
            SoaRdata,
            SOA,
            self._ns_name,
            self._hostmaster,
            self.view.serial,
            SOA_REFRESH_S,
            SOA_RETRY_S,
            SOA_EXPIRE_S,
            self.ttl_s,
        )
        rrset = self.rrset(self.origin, SOA, [rd])
        self._soa = (self.view.serial, rrset)
        return rrset

    def _addresses(
        self, ips: Iterable[str], qtype: int, owner: dns.name.Name | None = None
    ) -> Records:
        rdatas: dict[dns.rdatatype.RdataType, list[dns.rdata.Rdata]] = {}
        for ip in ips:
            v6 = ":" in ip
            rdtype = AAAA if v6 else A
            if _want(qtype, rdtype):
                rd = _rdata(AaaaRdata, AAAA, ip) if v6 else _rdata(ARdata, A, ip)
                rdatas.setdefault(rdtype, []).append(rd)
        return {t: self.rrset(owner or self.origin, t, rds) for t, rds in rdatas.items()}

    def _address_rrsets(self, owner: dns.name.Name, ips: Iterable[str]) -> list[dns.rrset.RRset]:
        return list(self._addresses(ips, ANY, owner).values())

    def _service_name(self, rec: ServiceRecord, *host: str) -> dns.name.Name:
        return self._memo(
            rec, ("name", *host), lambda: self._name(*host, rec.name, rec.namespace, "svc")
        )

    @staticmethod
    def _memo(rec: ServiceRecord, key: object, build: Callable[[], T]) -> T:
        """Derived records live on the (immutable) service record: built once per version of
        the service, dropped with it when the watch changes the service."""
        try:
            return rec.memo[key]  # type: ignore[no-any-return]
        except KeyError:
            value = rec.memo[key] = build()
            return value

    def _service_addresses(self, rec: ServiceRecord, qtype: int) -> Records:
        ips = rec.cluster_ips if rec.kind == CLUSTER_IP else tuple(m.ip for m in rec.members)
        every = self._memo(rec, "addresses", lambda: self._addresses(ips, ANY))
        return {t: r for t, r in every.items() if _want(qtype, t)}

    # ---- lookup -------------------------------------------------------------------------

    def lookup(self, qname: dns.name.Name, qtype: int) -> Lookup:
        """Answer ``qname``/``qtype`` for a name at or below the zone origin."""
        result = Lookup()
        name = qname
        for _ in range(MAX_CNAME_CHAIN):
            node = self._node(name, qtype)
            if node is None:
                result.rcode, result.negative = dns.rcode.NXDOMAIN, True
                return result
            if node.cname is not None and qtype not in (CNAME, ANY):
                result.answer.append(self._cname(name, node.cname))
                if not node.cname.is_subdomain(self.origin):
                    return result  # outside the zone: the answerer asks the upstream
                name = node.cname
                continue
            if node.cname is not None:
                node.records = {CNAME: self._cname(name, node.cname)}
            for template in node.records.values():
                result.answer.append(_owned(template, name))
            result.additional.extend(node.additional)
            result.negative = not node.records
            return result
        return result  # chain too long: return what was followed, as CoreDNS does

    def _cname(self, owner: dns.name.Name, target: dns.name.Name) -> dns.rrset.RRset:
        return self.rrset(owner, CNAME, [_rdata(CnameRdata, CNAME, target)])

    def _node(self, qname: dns.name.Name, qtype: int) -> Node | None:
        labels = qname.labels[: len(qname.labels) - len(self.origin.labels)]
        # Case-insensitive (spec 2.1): compare lower-cased labels; latin-1 never fails and
        # non-ASCII labels simply match nothing.
        parts = [lb.lower().decode("latin-1") for lb in reversed(labels)]
        if not parts:
            return self._apex(qtype)
        handler = self._handlers.get(parts[0])
        return handler(parts[1:], qtype) if handler else None

    def _apex(self, qtype: int) -> Node:
        node = Node()
        if _want(qtype, SOA):
            node.records[SOA] = self.soa()
        if _want(qtype, NS):
            node.records[NS] = self.rrset(self.origin, NS, [_rdata(NsRdata, NS, self._ns_name)])
            node.additional = self._address_rrsets(self._ns_name, self._dns_ips())
        return node

    def _version(self, parts: list[str], qtype: int) -> Node | None:
        if parts:
            return None
        node = Node()
        if _want(qtype, TXT):
            txt = _rdata(TxtRdata, TXT, [SCHEMA_VERSION])
            node.records[TXT] = self.rrset(self.origin, TXT, [txt])
        return node

    def _dns_ips(self) -> tuple[str, ...]:
        rec = self.view.service(*DNS_SERVICE)
        return rec.cluster_ips if rec is not None else ()

    def _dns(self, parts: list[str], qtype: int) -> Node | None:
        if not parts:
            return Node()
        if parts == ["ns"]:
            return Node(self._addresses(self._dns_ips(), qtype))
        return None

    # ---- services -----------------------------------------------------------------------

    def _svc(self, parts: list[str], qtype: int) -> Node | None:
        if not parts:
            return Node()
        if not self.view.namespace_exists(parts[0]):
            return None
        if len(parts) == 1:
            return Node()
        rec = self.view.service(parts[0], parts[1])
        if rec is None or (rec.kind == HEADLESS and not rec.members):
            return None  # spec 2.4.1: a headless service without ready endpoints: NXDOMAIN
        if len(parts) == 2:
            return self._service_node(rec, qtype)
        if len(parts) == 3:
            return self._below_service(rec, parts[2], qtype)
        if len(parts) == 4 and parts[2].startswith("_") and parts[3].startswith("_"):
            return self._srv_node(rec, parts[2][1:], parts[3][1:], qtype)
        return None

    def _service_node(self, rec: ServiceRecord, qtype: int) -> Node:
        if rec.kind == EXTERNAL_NAME:
            try:
                return Node(cname=dns.name.from_text(rec.external_name))
            except dns.exception.DNSException:
                return Node()  # an externalName DNS cannot express: the name exists, no data
        node = Node(self._service_addresses(rec, qtype))
        if _want(qtype, SRV):
            self._add_srv(node, rec, ("srv",), rec.ports)
        return node

    def _below_service(self, rec: ServiceRecord, label: str, qtype: int) -> Node | None:
        if label.startswith("_"):
            # `_<proto>` is an empty non-terminal when some named port uses that protocol.
            named = [p for p in rec.ports if p.name and p.protocol == label[1:]]
            return Node() if named and rec.kind != EXTERNAL_NAME else None
        ips = rec.hosts.get(label) if rec.kind == HEADLESS else None
        if not ips:
            return None
        every = self._memo(rec, ("host", label), lambda: self._addresses(ips, ANY))
        return Node({t: r for t, r in every.items() if _want(qtype, t)})

    def _srv_node(self, rec: ServiceRecord, proto: str, port: str, qtype: int) -> Node | None:
        ports = [p for p in rec.ports if p.name and p.name == port and p.protocol == proto]
        if not ports or rec.kind == EXTERNAL_NAME:
            return None
        node = Node()
        if _want(qtype, SRV):
            self._add_srv(node, rec, ("srv", proto, port), ports)
        return node

    def _add_srv(
        self, node: Node, rec: ServiceRecord, key: tuple[str, ...], ports: Sequence[Port]
    ) -> None:
        records, additional = self._memo(rec, key, lambda: self._build_srv(rec, ports))
        node.records.update(records)
        node.additional.extend(additional)

    def _build_srv(
        self, rec: ServiceRecord, ports: Sequence[Port]
    ) -> tuple[Records, list[dns.rrset.RRset]]:
        """SRV per port (ClusterIP: target the service; headless: each endpoint), with the
        targets' addresses in the additional section (spec 2.3.2, 2.4.2)."""
        if rec.kind == CLUSTER_IP:
            target = self._service_name(rec)
            entries = [(target, p.port) for p in ports]
            extra = {target: rec.cluster_ips}
        else:
            named = [(self._service_name(rec, m.host_label), m) for m in rec.members]
            entries = [(t, m.port_for(p)) for p in ports for t, m in named]
            extra = {t: rec.hosts[m.host_label] for t, m in named}
        if not entries:
            return {}, []
        # CoreDNS: priority 0, weights splitting 100 evenly between the records.
        weight = 100 // len(entries)
        rdatas = [_rdata(SrvRdata, SRV, 0, weight, number, t) for t, number in entries]
        additional = [rrs for t, ips in extra.items() for rrs in self._address_rrsets(t, ips)]
        return {SRV: self.rrset(self.origin, SRV, rdatas)}, additional

    # ---- pods ---------------------------------------------------------------------------

    def _pod(self, parts: list[str], qtype: int) -> Node | None:
        if not parts:
            return Node()
        if self.pods_mode == "disabled":
            return None
        if len(parts) == 1:
            return Node() if self.view.namespace_exists(parts[0]) else None
        if len(parts) != 2:
            return None
        ip = pod_label_ip(parts[1])
        if ip is None:
            return None
        if self.pods_mode == "verified" and not self.view.has_pod_ip(parts[0], ip):
            return None
        return Node(self._addresses([ip], qtype))

    # ---- reverse ------------------------------------------------------------------------

    def reverse(self, qname: dns.name.Name, qtype: int) -> Lookup | None:
        """PTR for a ClusterIP or a headless endpoint with a hostname; None if not ours."""
        try:
            ip = str(ipaddress.ip_address(dns.reversename.to_address(qname)))
        except (dns.exception.DNSException, ValueError):
            return None
        owners = self.view.names_for_ip(ip)
        if not owners:
            return None
        result = Lookup()
        if _want(qtype, PTR):
            targets = [self._name(*([h] if h else []), svc, ns, "svc") for ns, svc, h in owners]
            result.answer.append(
                self.rrset(qname, PTR, [_rdata(PtrRdata, PTR, t) for t in targets])
            )
        result.negative = not result.answer
        return result


def pod_label_ip(label: str) -> str | None:
    """``10-244-1-5`` -> 10.244.1.5; IPv6 with dashes for colons (CoreDNS findPods)."""
    text = label.replace("-", ".") if label.count("-") == 3 else label.replace("-", ":")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _owned(template: dns.rrset.RRset, owner: dns.name.Name) -> dns.rrset.RRset:
    """A copy of ``template`` named ``owner``; copying keeps the rdatas' hashes (cheap)."""
    rrset: dns.rrset.RRset = template.copy()  # type: ignore[no-untyped-call]
    rrset.name = owner
    return rrset
