"""kube-proxy's service table, compiled for per-packet lookups that do not grow with its size.

Theory of operation.  A Service (seed 000; https://kubernetes.io/docs/reference/networking/
virtual-ips/) maps (protocol, ClusterIP, port), (protocol, externalIP, port) and
(protocol, nodeIP, nodePort) to a set of endpoints.  ``set_service`` compiles one Service into
``CompiledPort`` objects stored in one dict per protocol keyed by the 6 bytes ``ip + port`` as
they appear on the wire, so the router finds the rule for a new flow with one dict lookup
whatever the number of services.  Backend choice for a new flow follows the proxy mode:

* ``iptables``: uniform random (the statistic module's probabilities), seeded;
* ``ipvs``: ``rr`` round robin, ``lc`` least connections (active conntrack entries), ``sh``
  source hashing on the client IP;
* ``userspace``: round robin; ``next_backend`` lets the adapter retry another one.

Endpoint selection follows Kubernetes: ready endpoints; if there are none, endpoints that are
serving and terminating (KEP-1669, "ProxyTerminatingEndpoints"); if none either, the service
refuses new connections at once.  ``sessionAffinity: ClientIP`` pins a client IP to a backend
for ``session_affinity_timeout_s`` after its last use (Kubernetes default 10800 s).

``internalTrafficPolicy: Local`` (KEP-2086; https://kubernetes.io/docs/concepts/services-
networking/service-traffic-policy/) is applied when a service is compiled, not per packet: the
ClusterIP rules of such a port get a ``CompiledPort`` whose usable backends are this node's own
(the fallback above applies among them), and its ``external`` twin with every usable backend
serves the external addresses (nodePorts, externalIPs, LoadBalancer IPs) that the policy does
not cover.  A port with usable endpoints elsewhere but none here has ``no_local`` set: kube-proxy
drops such traffic ("has no local endpoints") where it rejects a service with none at all.

``externalTrafficPolicy: Local`` (https://kubernetes.io/docs/tasks/access-application-cluster/
create-external-load-balancer/#preserving-the-client-source-ip) is the mirror image: the
``external`` twin chooses among this node's endpoints only, with ``no_local`` set when the
service has usable endpoints elsewhere but none here (kube-proxy's KUBE-XLB chain drops such
traffic, and the node fails its ``healthCheckNodePort`` probe so a load balancer stops sending
it any); ClusterIP traffic keeps every endpoint unless ``internalTrafficPolicy`` says otherwise.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from knemu.errors import ConfigError
from knemu.proto.wire import ip_to_bytes

PROTOCOLS = {"TCP": 6, "UDP": 17}


@dataclass(frozen=True)
class ServicePortEntry:
    """One port of a Service (spec.ports[i]); ``name`` keys the backends dict."""

    name: str
    protocol: str  # "TCP" | "UDP"
    port: int
    node_port: int = 0  # 0: no NodePort


@dataclass(frozen=True)
class ServiceEntry:
    """What kube-proxy needs of a Service; ``key`` is "namespace/name"."""

    key: str
    cluster_ips: tuple[str, ...]
    ports: tuple[ServicePortEntry, ...]
    session_affinity_timeout_s: float = 0.0  # 0: sessionAffinity None
    external_ips: tuple[str, ...] = ()
    internal_local: bool = False  # internalTrafficPolicy: Local
    external_local: bool = False  # externalTrafficPolicy: Local
    load_balancer_ips: tuple[str, ...] = ()  # also in external_ips; source_ranges guard them
    source_ranges: tuple[str, ...] = ()  # spec.loadBalancerSourceRanges ("": everyone)


@dataclass(frozen=True)
class Backend:
    """One endpoint of one service port, with its target port already resolved for its pod."""

    ip: str
    port: int
    ready: bool
    serving: bool = True
    terminating: bool = False
    node_name: str = ""


class CompiledBackend:
    """A backend in wire form.  ``key`` (protocol byte + ip + port) is how conntrack indexes
    the flows using it."""

    __slots__ = ("backend", "ip", "key", "port", "wire")

    def __init__(self, backend: Backend, proto: int) -> None:
        self.backend = backend
        self.ip = ip_to_bytes(backend.ip)
        self.port = backend.port.to_bytes(2, "big")
        self.wire = self.ip + self.port
        self.key = bytes((proto,)) + self.wire


@dataclass
class CompiledPort:
    """One (service, port) rule: its usable backends and selection state."""

    key: str  # "ns/name:portname"
    service: str  # "ns/name"
    spec: ServicePortEntry
    proto: int
    port: int
    affinity_s: float
    usable: list[CompiledBackend] = field(default_factory=list)  # ready, else serving+terminating
    all_backends: dict[bytes, CompiledBackend] = field(default_factory=dict)  # by wire ip+port
    rr_next: int = 0
    affinity: dict[bytes, tuple[CompiledBackend, float]] = field(default_factory=dict)
    # internalTrafficPolicy Local only: the rule external traffic uses (every usable backend),
    # and whether internal traffic is dropped for want of a local endpoint (module doc).
    external: CompiledPort | None = None
    no_local: bool = False
    # externalTrafficPolicy Local (the external twin): the client's address is kept, no SNAT.
    preserve_source: bool = False
    # loadBalancerSourceRanges: (network, mask) pairs a client of ``guarded`` addresses (the
    # LoadBalancer IPs, as kube-proxy's KUBE-FW chain) must be in; empty: no restriction.
    source_ranges: tuple[tuple[int, int], ...] = ()
    guarded: frozenset[bytes] = frozenset()

    def refuses_source(self, client: bytes, dst: bytes) -> bool:
        """True when ``client`` may not reach the LoadBalancer address ``dst``."""
        if not self.source_ranges or dst not in self.guarded:
            return False
        addr = int.from_bytes(client, "big")
        return not any(addr & mask == net for net, mask in self.source_ranges)


def _usable(backends: Iterable[Backend]) -> list[Backend]:
    """Ready endpoints, else serving+terminating ones (Kubernetes terminating-endpoints
    fallback, KEP-1669)."""
    items = list(backends)
    ready = [b for b in items if b.ready]
    if ready:
        return ready
    return [b for b in items if b.serving and b.terminating]


def _v4(*ips: str) -> list[str]:
    """The IPv4 addresses: a dual-stack service's IPv6 ones are skipped (IPv4-only overlay)."""
    return [ip for ip in ips if ip and ip != "None" and ":" not in ip]


def _validate(entry: ServiceEntry, spe: ServicePortEntry) -> int:
    """The protocol number of a service port; ConfigError naming the service and field."""
    proto = PROTOCOLS.get(spe.protocol)
    if proto is None:
        raise ConfigError(
            f"service {entry.key} port {spe.name!r}: protocol {spe.protocol!r} "
            "is not supported (use TCP or UDP)"
        )
    _check_port(entry.key, spe.port, "port")
    if spe.node_port:
        _check_port(entry.key, spe.node_port, "nodePort")
    if not _v4(*entry.cluster_ips, *entry.external_ips):
        raise ConfigError(
            f"service {entry.key}: no IPv4 ClusterIP (headless services have none and are "
            "not proxied; only IPv4 is carried)"
        )
    return proto


def _ranges(entry: ServiceEntry) -> tuple[tuple[int, int], ...]:
    """loadBalancerSourceRanges as (network, mask) integers; IPv6 ranges are skipped (IPv4
    data plane), a malformed one is a ConfigError naming the field."""
    out = []
    for i, text in enumerate(entry.source_ranges):
        try:
            net = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            raise ConfigError(
                f"service {entry.key}: spec.loadBalancerSourceRanges[{i}] {text!r} is not a CIDR"
            ) from None
        if net.version == 4:
            out.append((int(net.network_address), int(net.netmask)))
    return tuple(out)


def _check_port(service: str, port: int, what: str) -> None:
    if not 1 <= port <= 65535:
        raise ConfigError(f"service {service}: {what} {port} is not a port (1-65535)")


class ServiceTable:
    """Compiled services: ``rules[proto][ip + port]`` -> CompiledPort, and ``pick``."""

    def __init__(
        self,
        proxy_mode: str = "iptables",
        ipvs_scheduler: str = "rr",
        seed: int = 0,
        node_name: str = "",
    ) -> None:
        if proxy_mode not in ("iptables", "ipvs", "userspace"):
            raise ConfigError(f"proxy_mode {proxy_mode!r}: use iptables, ipvs or userspace")
        if ipvs_scheduler not in ("rr", "lc", "sh"):
            raise ConfigError(f"ipvs_scheduler {ipvs_scheduler!r}: use rr, lc or sh")
        self.mode = proxy_mode
        self.node_name = node_name  # whose endpoints are local (internalTrafficPolicy)
        self.scheduler = ipvs_scheduler if proxy_mode == "ipvs" else "rr"
        self._rng = random.Random(seed)
        self.rules: dict[int, dict[bytes, CompiledPort]] = {6: {}, 17: {}}
        # Every address some rule matches on: a cheap first test before building a rule key.
        self.vips: set[bytes] = set()
        self._vip_refs: dict[bytes, int] = {}
        self.entries: dict[str, ServiceEntry] = {}
        self.ports: dict[str, list[CompiledPort]] = {}  # service key -> its compiled ports
        self._keys: dict[str, list[tuple[int, bytes]]] = {}  # service key -> rule keys
        # Active connections per backend key, for IPVS lc; the router points it at conntrack.
        self.active_of: Callable[[bytes], int] = lambda key: 0

    # -- table updates (not on the per-packet path) ----------------------------------------

    def set_service(
        self,
        entry: ServiceEntry,
        backends: dict[str, list[Backend]],
        node_ips: tuple[str, ...] = (),
    ) -> tuple[set[bytes], set[bytes]]:
        """Install or replace a service.  Returns (gone, unusable): keys of the backends that
        left the service entirely, and of those no longer usable for new flows; the router
        flushes conntrack with them.  Raises ConfigError naming the service and field when
        the entry is unusable (unknown protocol, port out of range, no ClusterIP)."""
        previous = list(self._compiled(entry.key))
        old_all = {cb.key for cp in previous for cb in cp.all_backends.values()}
        old_usable = {cb.key for cp in previous for cb in cp.usable}
        # SCTP ports are skipped, not refused: the router only carries TCP and UDP, and the
        # service's other ports must keep working.
        ports = [p for p in entry.ports if p.protocol != "SCTP"]
        compiled = [self._compile_port(entry, p, backends.get(p.name, [])) for p in ports]
        self._remove_rules(entry.key)
        keys: list[tuple[int, bytes]] = []
        internal = [ip_to_bytes(ip) for ip in _v4(*entry.cluster_ips)]
        external = [ip_to_bytes(ip) for ip in _v4(*entry.external_ips)]
        nodes = [ip_to_bytes(ip) for ip in node_ips]
        for cp, spe in zip(compiled, ports, strict=True):
            port = spe.port.to_bytes(2, "big")
            ext_keys = [ip + port for ip in external]
            if spe.node_port:
                ext_keys += [ip + spe.node_port.to_bytes(2, "big") for ip in nodes]
            rules = [(ip + port, cp) for ip in internal]
            rules += [(k, cp.external or cp) for k in ext_keys]
            for rule_key, rule in rules:
                self.rules[cp.proto][rule_key] = rule
                keys.append((cp.proto, rule_key))
        for _, rule_key in keys:
            self._vip_refs[rule_key[:4]] = self._vip_refs.get(rule_key[:4], 0) + 1
            self.vips.add(rule_key[:4])
        self.entries[entry.key] = entry
        self.ports[entry.key] = compiled
        self._keys[entry.key] = keys
        now = list(self._compiled(entry.key))
        now_all = {cb.key for cp in now for cb in cp.all_backends.values()}
        now_usable = {cb.key for cp in now for cb in cp.usable}
        return old_all - now_all, old_usable - now_usable

    def remove_service(self, key: str) -> set[bytes]:
        """Remove a service's rules; returns the keys of every backend it had."""
        gone = {cb.key for cp in self._compiled(key) for cb in cp.all_backends.values()}
        self._remove_rules(key)
        self.entries.pop(key, None)
        self.ports.pop(key, None)
        return gone

    def _compile_port(
        self,
        entry: ServiceEntry,
        spe: ServicePortEntry,
        backends: list[Backend],
    ) -> CompiledPort:
        proto = _validate(entry, spe)
        key = f"{entry.key}:{spe.name}"
        previous = next((p for p in self.ports.get(entry.key, []) if p.key == key), None)
        everywhere = _usable(backends)
        if not entry.internal_local and not entry.external_local:
            return self._rule(entry, spe, proto, backends, everywhere, previous)
        # A Local policy: the fallback applies among this node's endpoints only (kube-proxy
        # CategorizeEndpoints); the other kind of traffic keeps the whole service.
        local = _usable(b for b in backends if self._is_local(b))
        ext_previous = previous.external if previous is not None else None
        ext_usable = local if entry.external_local else everywhere
        external = self._rule(entry, spe, proto, backends, ext_usable, ext_previous)
        external.no_local = entry.external_local and not local and bool(everywhere)
        external.preserve_source = entry.external_local
        cp = self._rule(entry, spe, proto, backends, local if entry.internal_local else everywhere,
                        previous)  # fmt: skip
        cp.external = external
        cp.no_local = entry.internal_local and not local and bool(everywhere)
        return cp

    def local_endpoints(self, key: str) -> int:
        """How many of this node's endpoints of service ``key`` are usable (the ready / serving
        terminating fallback among them): kube-proxy's healthcheck ``localEndpoints``."""
        ips: set[str] = set()
        for cp in self.ports.get(key, []):
            here = (cb.backend for cb in cp.all_backends.values() if self._is_local(cb.backend))
            ips.update(b.ip for b in _usable(here))
        return len(ips)

    def _rule(
        self,
        entry: ServiceEntry,
        spe: ServicePortEntry,
        proto: int,
        backends: list[Backend],
        usable: list[Backend],
        previous: CompiledPort | None,
    ) -> CompiledPort:
        """One rule over ``backends`` choosing among ``usable``; keeps ``previous``'s round
        robin position and the affinities that still point at a usable backend."""
        cp = CompiledPort(
            key=f"{entry.key}:{spe.name}",
            service=entry.key,
            spec=spe,
            proto=proto,
            port=spe.port,
            affinity_s=entry.session_affinity_timeout_s,
            source_ranges=_ranges(entry),
            guarded=frozenset(ip_to_bytes(ip) for ip in _v4(*entry.load_balancer_ips)),
        )
        for b in (b for b in backends if ":" not in b.ip):
            _check_port(entry.key, b.port, f"backend {b.ip} target port")
            cb = CompiledBackend(b, proto)
            cp.all_backends[cb.wire] = cb
        wanted = {(b.ip, b.port) for b in usable}
        cp.usable = [
            cb for cb in cp.all_backends.values() if (cb.backend.ip, cb.backend.port) in wanted
        ]
        if previous is not None:
            cp.rr_next = previous.rr_next
            cp.affinity = {
                c: (cp.all_backends[b.wire], t)
                for c, (b, t) in previous.affinity.items()
                if b.wire in cp.all_backends and cp.all_backends[b.wire] in cp.usable
            }
        return cp

    def _is_local(self, backend: Backend) -> bool:
        """On this node (EndpointSlice ``nodeName``); an endpoint naming no node is not."""
        return bool(backend.node_name) and backend.node_name == self.node_name

    def _compiled(self, key: str) -> Iterable[CompiledPort]:
        """Every rule of a service: its ports and their ``external`` twins."""
        for cp in self.ports.get(key, []):
            yield cp
            if cp.external is not None:
                yield cp.external

    def _remove_rules(self, key: str) -> None:
        for proto, rule_key in self._keys.pop(key, []):
            self.rules[proto].pop(rule_key, None)
            ip = rule_key[:4]
            left = self._vip_refs.get(ip, 1) - 1
            if left:
                self._vip_refs[ip] = left
            else:
                self._vip_refs.pop(ip, None)
                self.vips.discard(ip)

    # -- per new flow ------------------------------------------------------------------------

    def pick(self, cp: CompiledPort, client_ip: bytes, now: float) -> CompiledBackend | None:
        """Choose the backend for a new flow from ``client_ip``; None: no usable endpoint."""
        usable = cp.usable
        if not usable:
            return None
        if cp.affinity_s > 0:
            pinned = cp.affinity.get(client_ip)
            if pinned is not None and now - pinned[1] <= cp.affinity_s:
                cp.affinity[client_ip] = (pinned[0], now)
                return pinned[0]
        chosen = self._choose(cp, usable, client_ip)
        if cp.affinity_s > 0:
            cp.affinity[client_ip] = (chosen, now)
        return chosen

    def _choose(
        self, cp: CompiledPort, usable: list[CompiledBackend], client_ip: bytes
    ) -> CompiledBackend:
        if self.mode == "iptables":
            return usable[self._rng.randrange(len(usable))]
        if self.scheduler == "lc":
            # IPVS lc: fewest active connections; ties go to the earliest (IPVS keeps order).
            return min(usable, key=lambda cb: self.active_of(cb.key))
        if self.scheduler == "sh":
            # IPVS sh: a static hash of the source address (ip_vs_sh.c multiplies by the
            # golden-ratio prime 2654435761) so one client always lands on one backend.
            h = (int.from_bytes(client_ip, "big") * 2654435761) & 0xFFFFFFFF
            return usable[h % len(usable)]
        chosen = usable[cp.rr_next % len(usable)]
        cp.rr_next = (cp.rr_next + 1) % len(usable)
        return chosen

    def next_backend(
        self, cp: CompiledPort, failed: bytes, client_ip: bytes, now: float
    ) -> CompiledBackend | None:
        """Userspace-proxy retry: another usable backend than ``failed`` (wire ip+port)."""
        others = [cb for cb in cp.usable if cb.wire != failed]
        if not others:
            return None
        chosen = others[cp.rr_next % len(others)]
        cp.rr_next = (cp.rr_next + 1) % max(len(cp.usable), 1)
        if cp.affinity_s > 0:
            cp.affinity[client_ip] = (chosen, now)
        return chosen

    def expire_affinity(self, now: float) -> None:
        """Forget ClientIP affinities idle for longer than their timeout."""
        for key in self.ports:
            for cp in self._compiled(key):
                if cp.affinity:
                    stale = [c for c, (_, t) in cp.affinity.items() if now - t > cp.affinity_s]
                    for c in stale:
                        del cp.affinity[c]

    def next_affinity_deadline(self) -> float | None:
        deadlines = [
            t + cp.affinity_s
            for key in self.ports
            for cp in self._compiled(key)
            for (_, t) in cp.affinity.values()
        ]
        return min(deadlines) if deadlines else None

    def snapshot(self) -> list[dict[str, object]]:
        """Services with their ports and backends, JSON-serialisable (for ``GET /table``)."""
        out: list[dict[str, object]] = []
        for key in sorted(self.entries):
            entry = self.entries[key]
            ports = []
            for cp in self.ports[key]:
                ports.append({**asdict(cp.spec), **self._port_snapshot(cp)})
            out.append(
                {
                    "key": key,
                    "cluster_ips": list(entry.cluster_ips),
                    "external_ips": list(entry.external_ips),
                    "session_affinity_timeout_s": entry.session_affinity_timeout_s,
                    "internal_traffic_policy": "Local" if entry.internal_local else "Cluster",
                    "ports": ports,
                }
            )
        return out

    def _port_snapshot(self, cp: CompiledPort) -> dict[str, object]:
        """A port's backends: ``usable`` for the service's new flows (external traffic under
        internalTrafficPolicy Local), ``usable_internal`` for ClusterIP traffic from here."""
        internal = {cb.wire for cb in cp.usable}
        usable = {cb.wire for cb in (cp.external or cp).usable}
        rows = []
        for cb in cp.all_backends.values():
            row = {**asdict(cb.backend), "local": self._is_local(cb.backend)}
            rows.append(
                {**row, "usable": cb.wire in usable, "usable_internal": cb.wire in internal}
            )
        return {"backends": rows, "no_local_endpoints": cp.no_local}
