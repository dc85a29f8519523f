"""kube-proxy's part of the node router: the service table and conntrack, their control calls
and timers, and the decisions about a flow's first packet to a service.

``Router`` (``dataplane.router``, whose docstring describes the whole pipeline) is composed of
this part, the route table and the verdicts; this part holds what its per-packet path
consults: ``services`` (the kube-proxy rules, ``service_table``), ``conntrack`` (DNAT entries
and their reverse), the first fragments of translated datagrams, and the NetworkPolicy gate
while some local pod is isolated.
"""

from __future__ import annotations

from typing import Any

from knemu.errors import ConfigError
from knemu.node_agent.dataplane.routes import LocalNode, Output, net_mask
from knemu.node_agent.dataplane.verdicts import Verdicts
from knemu.node_agent.events import DropReason as Drop
from knemu.node_agent.kubeproxy.conntrack import Conntrack, CtHalf, CtTimeouts
from knemu.node_agent.kubeproxy.service_table import (
    Backend,
    CompiledPort,
    ServiceEntry,
    ServiceTable,
)
from knemu.node_agent.policy.gate import PolicyGate
from knemu.proto import wire

FRAGMENT_S = 30.0  # net.ipv4.ipfrag_time
_NAT_PORT_TRIES = 16


class ServiceNat:
    """Services, conntrack and their timers for one node's router (the router reads
    ``services``, ``conntrack`` and ``fragments`` on its hot path and calls ``new_flow``,
    ``dead_flow`` and ``deny``)."""

    def __init__(
        self,
        node: LocalNode,
        verdicts: Verdicts,
        proxy_mode: str = "iptables",
        ipvs_scheduler: str = "rr",
        seed: int = 0,
        timeouts: CtTimeouts | None = None,
    ) -> None:
        self.node = node
        self.verdicts = verdicts
        self.gw = wire.ip_to_bytes(node.gateway_ip)
        self.own = (self.gw, wire.ip_to_bytes(node.underlay_ip))  # the node's own addresses
        # The NodePort relay connects from the node IP (nodeport.py); nothing else on the node
        # does (its routes to the cluster use the gateway), so that source marks external
        # traffic, which internalTrafficPolicy does not cover.
        self.external_client = self.own[1]
        self.cluster_net = net_mask(node.cluster_cidr, f"node {node.name} cluster_cidr")
        self.services = ServiceTable(proxy_mode, ipvs_scheduler, seed, node.name)
        self.conntrack = Conntrack(timeouts)
        self.services.active_of = self.conntrack.active
        # First fragments of translated datagrams: (src, dst, IP ID, proto) -> (half, time).
        self.fragments: dict[bytes, tuple[CtHalf, float]] = {}
        self.policy: PolicyGate | None = None  # None while no local pod is isolated

    def set_service(
        self, key: str, entry: ServiceEntry, backends: dict[str, list[Backend]]
    ) -> None:
        """Install/replace a service; flush conntrack of backends that left (module doc)."""
        if entry.key != key:
            raise ConfigError(f"set_service({key!r}): entry.key is {entry.key!r}; they must match")
        try:
            gone, unusable = self.services.set_service(entry, backends, (self.node.underlay_ip,))
        except ValueError as exc:
            raise ConfigError(f"service {key}: {exc}") from None
        self.conntrack.flush_backends(gone | unusable, wire.PROTO_UDP, key)
        self.conntrack.mark_dead(gone, wire.PROTO_TCP, key)

    def remove_service(self, key: str) -> None:
        """Remove a service's rules (its VIP then answers ICMP unreachable, see above)."""
        gone = self.services.remove_service(key)
        self.conntrack.flush_backends(gone, wire.PROTO_UDP, key)
        self.conntrack.mark_dead(gone, wire.PROTO_TCP, key)

    def next_backend(
        self, service_port: str, failed_ip: str, failed_port: int, client_ip: str, now: float
    ) -> tuple[str, int] | None:
        """Userspace-mode retry (kube-proxy's userspace proxier tries the next endpoint when a
        connection fails): another usable backend of ``service_port`` ("ns/name:port"), or
        None.  The ClientIP affinity moves to it."""
        service = service_port.split(":", 1)[0]
        cp = next((c for c in self.services.ports.get(service, []) if c.key == service_port), None)
        if cp is None:
            return None
        client = wire.ip_to_bytes(client_ip)
        if cp.external is not None and client == self.external_client:
            cp = cp.external
        failed = wire.ip_to_bytes(failed_ip) + failed_port.to_bytes(2, "big")
        chosen = self.services.next_backend(cp, failed, client, now)
        return None if chosen is None else (chosen.backend.ip, chosen.backend.port)

    # -- timers and introspection --------------------------------------------------------------

    def expire(self, now: float) -> None:
        """Drop conntrack entries and ClientIP affinities idle past their timeouts."""
        self.conntrack.expire(now)
        self.services.expire_affinity(now)
        if self.policy is not None:
            self.policy.expire(now)
        # Linux gives up on reassembly after ipfrag_time (30 s); so do we.
        stale = [k for k, (_, t) in self.fragments.items() if now - t > FRAGMENT_S]
        for key in stale:
            del self.fragments[key]

    def next_timer(self) -> float | None:
        """When ``expire`` next has something to do (None: nothing pending)."""
        frag = min((t for _, t in self.fragments.values()), default=None)
        candidates = (
            self.conntrack.next_deadline(),
            self.services.next_affinity_deadline(),
            None if frag is None else frag + FRAGMENT_S,
        )
        times = [t for t in candidates if t is not None]
        return min(times) if times else None

    # -- a flow's first packet, and flows whose backend left ---------------------------------

    def new_flow(
        self,
        rule: CompiledPort,
        key: bytes,
        pkt: bytes,
        ihl: int,
        origin: str,
        via: Any,
        now: float,
    ) -> CtHalf | Output | None:
        """kube-proxy for the first packet of a flow to a service address."""
        client = bytes(key[:4])
        if rule.external is not None and client == self.external_client:
            rule = rule.external  # NodePort traffic relayed by this node: see __init__
        if rule.refuses_source(client, bytes(key[4:8])):
            return self.verdicts.drop(Drop.SOURCE_RANGE, pkt, origin, now)
        backend = self.services.pick(rule, client, now)
        if backend is None:
            if rule.no_local:
                # internalTrafficPolicy Local with endpoints only elsewhere: kube-proxy DROPs
                # ("has no local endpoints"), so the client times out instead of being reset.
                return self.verdicts.drop(Drop.NO_LOCAL_ENDPOINTS, pkt, origin, now)
            return self.verdicts.refuse(Drop.NO_ENDPOINTS, pkt, origin, via, now, rule.key)
        # Masquerade to the gateway (kube-proxy's KUBE-MARK-MASQ) when the reply would not
        # come back through us otherwise: hairpin (a pod reaching itself through its service)
        # and clients outside the cluster CIDR, e.g. the node's own kernel using its node IP.
        net, mask = self.cluster_net
        outside = int.from_bytes(client, "big") & mask != net
        # externalTrafficPolicy Local keeps an outside client's address (the backend is
        # local, so the reply comes back through us); the relay's node IP is still masked.
        if rule.preserve_source and client != self.external_client:
            outside = False
        masq = backend.ip == client or outside
        src = self.gw if masq else client
        if backend.ip in self.own and (client == self.gw or masq):
            # The node's kernel reaching a service the node itself backs (kube-dns' node-local
            # forwarder, a hostNetwork pod here): from a node address the reply would stay in
            # the kernel, never un-NATed; from the service address it comes back through us.
            src = bytes(key[4:8])
        proto = pkt[9]
        syn = proto == 6 and pkt[ihl + 13] & (wire.TCP_SYN | wire.TCP_ACK) == wire.TCP_SYN
        sport = int.from_bytes(key[8:10], "big")
        for attempt in range(_NAT_PORT_TRIES):
            # Another flow already owns this reply tuple (the client reused a source port
            # towards another service with the same backend): like Linux NAT, pick another
            # source port for the translated flow; the reply is mapped back to the original.
            port = sport if not attempt else 32768 + (sport + attempt * 7919) % 28232
            translated = src + backend.ip + port.to_bytes(2, "big") + backend.port
            entry = self.conntrack.create(proto, bytes(key), translated, rule.key, now, syn)
            if entry is not None:
                break
        else:
            return self.verdicts.drop(Drop.NAT_COLLISION, pkt, origin, now)
        if masq:
            self.verdicts.stats["snat"] += 1
        return entry.fwd

    def deny(self, pkt: bytes, half: CtHalf | None, origin: str, now: float) -> Output | None:
        """NetworkPolicy said no: drop (the client times out).  The NAT entry the packet just
        created is forgotten, as Linux never confirms the conntrack entry of a dropped packet."""
        if half is not None and not half.reply and not half.entry.replied:
            self.conntrack.remove(half.entry)
        return self.verdicts.drop(Drop.POLICY_DENIED, pkt, origin, now)

    def dead_flow(
        self, half: CtHalf, pkt: bytes, origin: str, via: Any, now: float
    ) -> Output | None:
        """A packet of a TCP flow whose backend left: reset the client, forget the flow."""
        entry = half.entry
        if half.reply:
            return self.verdicts.drop(Drop.STALE_BACKEND, pkt, origin, now)
        self.conntrack.remove(entry)
        return self.verdicts.refuse(Drop.STALE_BACKEND, pkt, origin, via, now, entry.service)
