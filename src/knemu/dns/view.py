"""The cluster as the DNS component sees it, fed by the api-server's watch.

The view keeps only what DNS answers need, indexed for one-dict-lookup queries:

* per service, a :class:`ServiceRecord` (type, ClusterIPs, ports, and for headless services the
  *published* endpoint addresses: ready ones, or all when ``publishNotReadyAddresses`` is set);
* a reverse index IP -> names for PTR records (ClusterIPs, headless endpoints with a hostname);
* pod IPs per namespace (``pods verified``), and which namespaces exist.

It is driven by plain calls, ``apply(type, kind, message)`` with ``knemu.proto.knemu_pb2``
messages and ``mark_synced()``, so it needs no server to test.  A service's record is rebuilt
whenever the service, one of its EndpointSlices, or a pod whose ``subdomain`` names it changes,
so an answer reflects the watch as soon as the event is applied.  ``generation`` counts every
applied event and sync marker; the answerer's wire cache (knemu.dns.answer) keys on it, so a
cached reply never outlives the view it was built from.

Endpoint hostnames follow the EndpointSlice controller: an endpoint's ``hostname`` field, or the
hostname of a pod with that IP whose ``subdomain`` equals the service name (Kubernetes "Pod's
hostname and subdomain fields", docs/concepts/services-networking/dns-pod-service).
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from knemu.errors import LocalError
from knemu.proto import knemu_pb2 as pb

KINDS = ("Service", "EndpointSlice", "Pod")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
EVENT_TYPES = ("ADDED", "MODIFIED", "DELETED")

CLUSTER_IP = "ClusterIP"
HEADLESS = "Headless"
EXTERNAL_NAME = "ExternalName"

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class Port:
    name: str  # lower case; "" for an unnamed port
    protocol: str  # lower case: tcp | udp | sctp
    port: int


@dataclass(frozen=True)
class Member:
    """One published address of a headless service."""

    ip: str
    hostname: str  # explicit hostname ("" if none)
    ports: tuple[Port, ...] = ()  # its EndpointSlice's ports (the pods' target ports)

    def port_for(self, service_port: Port) -> int:
        """The endpoint's number for a service port: the slice port of that name and protocol
        (a headless service is not proxied, so clients must dial the target port, as CoreDNS
        answers), else the service's own number."""
        for p in self.ports:
            if p.name == service_port.name and p.protocol == service_port.protocol:
                return p.port
        return service_port.port

    @property
    def host_label(self) -> str:
        """The endpoint's DNS label: its hostname, else the dashed IP (as CoreDNS does)."""
        return self.hostname or dashed_ip(self.ip)


@dataclass(frozen=True)
class ServiceRecord:
    namespace: str
    name: str
    kind: str  # CLUSTER_IP | HEADLESS | EXTERNAL_NAME
    cluster_ips: tuple[str, ...] = ()
    external_name: str = ""
    ports: tuple[Port, ...] = ()
    members: tuple[Member, ...] = ()  # headless only: published addresses
    hosts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # host label -> IPs
    # Records derived from this version of the service (knemu.dns.zone fills it on demand).
    memo: dict[object, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class _PodInfo:
    ip: str
    hostname: str
    subdomain: str


def dashed_ip(ip: str) -> str:
    """10.244.1.5 -> 10-244-1-5; IPv6 colons become dashes (CoreDNS endpointHostname)."""
    return ip.replace(".", "-").replace(":", "-")


def _label(hostname: str) -> str:
    """The hostname as a DNS label, or "" if it is not one (RFC 1123 2.1; the api-server
    validates this, but one bad object must not break answers for its whole service)."""
    name = hostname.lower()
    return name if _LABEL.fullmatch(name) else ""


def _ports(ports: Iterable[pb.ServicePort | pb.EndpointPort]) -> tuple[Port, ...]:
    return tuple(Port(p.name.lower(), (p.protocol or "TCP").lower(), p.port) for p in ports)


def _normal_ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


class ClusterView:
    """Services, endpoints and pods, indexed for DNS answers."""

    def __init__(self) -> None:
        self._services: dict[Key, pb.Service] = {}
        self._slices: dict[Key, pb.EndpointSlice] = {}
        self._slices_by_service: dict[Key, set[str]] = {}
        self._pods: dict[Key, _PodInfo] = {}
        self._pods_by_ip: dict[Key, set[str]] = {}  # (namespace, ip) -> pod names
        self._records: dict[Key, ServiceRecord] = {}
        self._ptr: dict[str, set[tuple[str, str, str]]] = {}  # ip -> {(ns, service, host)}
        self._namespaces: Counter[str] = Counter()
        self._synced = False
        self._serial = 0
        self._changes = 0
        self._generation = 0

    # ---- state ----------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        """True once the watch's first SYNCED marker arrived (before it: SERVFAIL)."""
        return self._synced

    @property
    def serial(self) -> int:
        """SOA serial: the newest resourceVersion applied, folded into 32 bits (RFC 1982)."""
        return self._serial & 0xFFFFFFFF

    @property
    def generation(self) -> int:
        """Bumped by every applied event and every sync marker: whatever can change an answer.

        The SOA ``serial`` is not enough for that: it only follows resourceVersions, so an
        event carrying a version already seen (a replayed or hand-fed object) or a sync marker
        without one would leave it where it was while the answers change."""
        return self._generation

    def mark_synced(self, resource_version: int = 0) -> None:
        self._generation += 1
        self._synced = True
        self._serial = max(self._serial, resource_version)

    def statistics(self) -> dict[str, int]:
        return {
            "services": len(self._services),
            "endpoint_slices": len(self._slices),
            "pods": len(self._pods),
            "changes": self._changes,
        }

    # ---- feeding ----------------------------------------------------------------------------

    def apply(self, type: str, kind: str, obj: Message) -> None:
        """Apply one watch event (ADDED | MODIFIED | DELETED) for a Service/EndpointSlice/Pod."""
        if type not in EVENT_TYPES:
            raise LocalError(f"dns view: event type {type!r} is not one of {EVENT_TYPES}")
        handler = self._HANDLERS.get(kind)
        if handler is None:
            raise LocalError(f"dns view: kind {kind!r} is not watched; watch only {KINDS}")
        meta = obj.metadata  # type: ignore[attr-defined]
        self._generation += 1  # before the handler: even a half-applied event drops the cache
        self._serial = max(self._serial, int(meta.resource_version))
        self._changes += 1
        handler(self, (meta.namespace, meta.name), obj, type == "DELETED")

    def _apply_service(self, key: Key, obj: Message, deleted: bool) -> None:
        assert isinstance(obj, pb.Service)
        self._track_namespace(key, self._services, deleted)
        if deleted:
            self._services.pop(key, None)
        else:
            self._services[key] = obj
        self._rebuild(key)

    def _apply_slice(self, key: Key, obj: Message, deleted: bool) -> None:
        assert isinstance(obj, pb.EndpointSlice)
        self._track_namespace(key, self._slices, deleted)
        old = self._slices.pop(key, None)
        if old is not None:
            self._unlink_slice(key, old.service_name)
        if not deleted:
            self._slices[key] = obj
            self._slices_by_service.setdefault((key[0], obj.service_name), set()).add(key[1])
            self._rebuild((key[0], obj.service_name))

    def _unlink_slice(self, key: Key, service_name: str) -> None:
        svc_key = (key[0], service_name)
        names = self._slices_by_service.get(svc_key)
        if names is not None:
            names.discard(key[1])
            if not names:
                del self._slices_by_service[svc_key]
        self._rebuild(svc_key)

    def _apply_pod(self, key: Key, obj: Message, deleted: bool) -> None:
        assert isinstance(obj, pb.Pod)
        self._track_namespace(key, self._pods, deleted)
        old = self._pods.pop(key, None)
        if old is not None:
            self._index_pod_ip(key, old.ip, add=False)
        info = None
        if not deleted:
            info = _PodInfo(_normal_ip(obj.pod_ip) or "", obj.hostname, obj.subdomain)
            self._pods[key] = info
            self._index_pod_ip(key, info.ip, add=True)
        # Only services named by a subdomain borrow pod hostnames; rebuild those.
        for pod in (old, info):
            if pod is not None and pod.subdomain:
                self._rebuild((key[0], pod.subdomain))

    _HANDLERS = {"Service": _apply_service, "EndpointSlice": _apply_slice, "Pod": _apply_pod}

    def _track_namespace(self, key: Key, table: Mapping[Key, object], deleted: bool) -> None:
        present = key in table
        if deleted and present:
            self._namespaces[key[0]] -= 1
            if self._namespaces[key[0]] <= 0:
                del self._namespaces[key[0]]
        elif not deleted and not present:
            self._namespaces[key[0]] += 1

    def _index_pod_ip(self, key: Key, ip: str, *, add: bool) -> None:
        if not ip:
            return
        ip_key = (key[0], ip)
        if add:
            self._pods_by_ip.setdefault(ip_key, set()).add(key[1])
            return
        names = self._pods_by_ip.get(ip_key)
        if names is not None:
            names.discard(key[1])
            if not names:
                del self._pods_by_ip[ip_key]

    # ---- derived records ------------------------------------------------------------------

    def _rebuild(self, key: Key) -> None:
        old = self._records.pop(key, None)
        if old is not None:
            self._index_ptr(old, add=False)
        svc = self._services.get(key)
        if svc is None:
            return
        record = self._build(key, svc)
        self._records[key] = record
        self._index_ptr(record, add=True)

    def _build(self, key: Key, svc: pb.Service) -> ServiceRecord:
        ports = _ports(svc.ports)
        if svc.type == EXTERNAL_NAME:
            name = svc.external_name.rstrip(".").lower()
            return ServiceRecord(key[0], key[1], EXTERNAL_NAME, external_name=name, ports=ports)
        if svc.cluster_ip != "None":
            texts = list(svc.cluster_ips) or [svc.cluster_ip]
            ips = tuple(ip for ip in (_normal_ip(t) for t in texts) if ip)
            return ServiceRecord(key[0], key[1], CLUSTER_IP, cluster_ips=ips, ports=ports)
        members = self._members(key, svc.publish_not_ready_addresses)
        hosts: dict[str, tuple[str, ...]] = {}
        for m in members:
            hosts[m.host_label] = (*hosts.get(m.host_label, ()), m.ip)
        return ServiceRecord(key[0], key[1], HEADLESS, ports=ports, members=members, hosts=hosts)

    def _members(self, key: Key, publish_not_ready: bool) -> tuple[Member, ...]:
        """Published addresses of a headless service, in a stable order, without duplicates."""
        seen: dict[str, Member] = {}
        for slice_name in sorted(self._slices_by_service.get(key, ())):
            eps = self._slices[(key[0], slice_name)]
            if eps.address_type not in ("IPv4", "IPv6", ""):
                continue  # FQDN slices carry no addresses DNS can serve
            ports = _ports(eps.ports)
            for ep in eps.endpoints:
                # discovery.k8s.io/v1: an unset `ready` condition means ready.
                ready = ep.conditions.ready if ep.HasField("conditions") else True
                if not (ready or publish_not_ready):
                    continue
                for text in ep.addresses:
                    ip = _normal_ip(text)
                    if ip and ip not in seen:
                        hostname = _label(ep.hostname) or self._pod_hostname(key, ip)
                        seen[ip] = Member(ip, hostname, ports)
        return tuple(seen.values())

    def _pod_hostname(self, key: Key, ip: str) -> str:
        for pod_name in sorted(self._pods_by_ip.get((key[0], ip), ())):
            pod = self._pods[(key[0], pod_name)]
            if pod.hostname and pod.subdomain == key[1]:
                return _label(pod.hostname)
        return ""

    def _index_ptr(self, record: ServiceRecord, *, add: bool) -> None:
        entries: list[tuple[str, str]] = [(ip, "") for ip in record.cluster_ips]
        entries += [(m.ip, m.hostname) for m in record.members if m.hostname]
        for ip, host in entries:
            item = (record.namespace, record.name, host)
            if add:
                self._ptr.setdefault(ip, set()).add(item)
                continue
            names = self._ptr.get(ip)
            if names is not None:
                names.discard(item)
                if not names:
                    del self._ptr[ip]

    # ---- queries (all keys lower case, as DNS compares case-insensitively) -----------------

    def service(self, namespace: str, name: str) -> ServiceRecord | None:
        return self._records.get((namespace, name))

    def namespace_exists(self, namespace: str) -> bool:
        """A namespace is known once any watched object lives in it."""
        return namespace in self._namespaces

    def has_pod_ip(self, namespace: str, ip: str) -> bool:
        return (namespace, ip) in self._pods_by_ip

    def names_for_ip(self, ip: str) -> list[tuple[str, str, str]]:
        """(namespace, service, host) owning ``ip``, sorted; host "" for a ClusterIP."""
        return sorted(self._ptr.get(ip, ()))

    def services(self) -> Iterable[ServiceRecord]:
        return list(self._records.values())
