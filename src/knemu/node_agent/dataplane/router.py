"""The node's data plane: a sans-I/O router for pod, host and underlay packets.

Theory of operation.  Three entry points take one packet and return at most one output:
``handle_pod`` (read from a pod's TUN), ``handle_host`` (read from the node's host TUN, i.e. the
node's own kernel) and ``handle_underlay`` (a UDP datagram from a peer node's VTEP).  Every
packet goes through the same pipeline:

1. validate the IPv4 header (a malformed packet is a counted drop with a named reason);
2. conntrack: a packet of a translated flow is rewritten from its entry (kube-proxy DNAT on the
   way out, un-NAT of replies on the client's node, masquerade to the gateway for hairpin
   traffic and for clients outside the cluster CIDR); ICMP errors about a translated flow are
   un-NATed too (nf_conntrack's RELATED);
3. kube-proxy: the first packet of a flow to a service address picks a backend
   (``service_table``), creates the entry and is rewritten, or is refused at once (TCP RST /
   ICMP port unreachable from the service address) when no endpoint is usable, or dropped
   (``no_local_endpoints``) when ``internalTrafficPolicy: Local`` leaves none on this node;
4. route on the (rewritten) destination: a local pod by its IP, the node itself (gateway,
   node IP, anything outside the cluster) to the host TUN, another node's podCIDR by its prefix
   (a dict keyed by the first octets: the flannel/Calico route table) to the underlay through
   the node's encapsulation backend (``backends``: VXLAN, RFC 7348, or IP-in-IP, RFC 2003);
5. NetworkPolicy, only while some local pod is isolated (``policy.gate``): a connection's first
   packet is judged on the final addresses, later ones match its allowed-connection entry;
   a denied packet is dropped (``policy_denied``), as Calico does.

All rewriting happens once, in the output buffer, with RFC 1624 incremental checksum updates
precomputed per flow; per-packet work is a few dict lookups and does not grow with the number of
services or pods.  Nothing here raises on packet input.  The state steps 2, 3 and 5 consult,
their control calls and timers, and a flow's first-packet decisions live in the parts it is
composed of (``routes.RouteTable``, ``service_nat.ServiceNat``, ``verdicts.Verdicts``); this
module is the per-packet path.

Choices where Kubernetes leaves room (documented in the table snapshot and tests):
* A backend that leaves a service: its UDP conntrack entries are deleted at once (as kube-proxy's
  conntrack cleanup does), so the next datagram picks a live backend; its TCP entries are marked
  dead, and the client's next packet of such a flow gets a RST from the service address (the
  pod is normally gone; a prompt reset beats a hang).  Endpoints that are merely not ready keep
  their established TCP flows (graceful termination) but lose their UDP ones.
* Non-first IP fragments carry no ports, so they are routed but never translated (Linux
  defragments before conntrack; pods' MTU keeps TCP unfragmented, large UDP to a service is
  the exception).
* A deleted service removes its rules at once: packets to a service-CIDR address without a rule
  get ICMP destination unreachable (net unreachable; port unreachable when the address is still
  a service but not that port), counted as ``no_service``.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import ip_network
from typing import Any, cast

from knemu.node_agent import events as ev
from knemu.node_agent.dataplane.routes import (
    FROM_HOST,
    FROM_POD,
    FROM_UNDERLAY,
    OUT_HOST,
    OUT_POD,
    OUT_UNDERLAY,
    LocalNode,
    OutKind,
    Output,
    Peer,
    RouteTable,
    net_mask,
)
from knemu.node_agent.dataplane.service_nat import ServiceNat
from knemu.node_agent.dataplane.verdicts import Verdicts
from knemu.node_agent.events import DropReason as Drop
from knemu.node_agent.kubeproxy.conntrack import CLOSE, FIN_WAIT, CtHalf, CtTimeouts
from knemu.node_agent.kubeproxy.service_table import Backend, ServiceEntry
from knemu.node_agent.policy.gate import PolicyGate
from knemu.proto import wire
from knemu.proto.wire import checksum_adjust as _adjust

__all__ = [
    "FROM_HOST",
    "FROM_POD",
    "FROM_UNDERLAY",
    "OUT_HOST",
    "OUT_POD",
    "OUT_UNDERLAY",
    "LocalNode",
    "OutKind",
    "Output",
    "Peer",
    "Router",
]
_FRAGMENTS_MAX = 4096
_TTL_DELTA = 0xFEFF  # RFC 1624 term for TTL-1 in the TTL/protocol word (~m + m' = 0xFFFF - 0x100)


class Router:
    """One node's router, kube-proxy and VTEP.  See the module docstring.

    Composed of its parts: ``routes`` (pods and peers), ``nat`` (services, conntrack,
    first-packet decisions), ``verdicts`` (counters, drops, refusals, flow events) and, while
    some local pod is isolated, the NetworkPolicy gate.  The per-packet path below reads the
    parts' tables through references taken here (the parts mutate them in place), so the
    composition costs nothing per packet."""

    def __init__(
        self,
        node: LocalNode,
        proxy_mode: str = "iptables",
        ipvs_scheduler: str = "rr",
        seed: int = 0,
        flow_sink: Callable[[ev.FlowEvent], None] | None = None,
        timeouts: CtTimeouts | None = None,
    ) -> None:
        self.node = node
        self.routes = RouteTable(node)
        self.verdicts = Verdicts(node, flow_sink)
        self.nat = ServiceNat(node, self.verdicts, proxy_mode, ipvs_scheduler, seed, timeouts)
        self.services = self.nat.services
        self.conntrack = self.nat.conntrack
        self._forward_sink = self.verdicts.forward_sink
        self._policy: PolicyGate | None = None
        # hot-path references to the parts' tables and steps
        routes, nat, verdicts = self.routes, self.nat, self.verdicts
        self._pods, self._pod_ips = routes.pods, routes.pod_ips
        self._routes, self._prefix_lens, self._peer_by_ip = (
            routes.by_prefix, routes.prefix_lens, routes.peer_by_ip
        )  # fmt: skip
        self.backend = routes.backend
        # BGP: other nodes' podCIDRs are the kernel's (BIRD's routes), not this table's
        self._native = node.backend == "bgp"
        self._decapsulate = routes.backend.decapsulate
        # VXLAN answers ARP for the node's VTEP address, flannel's podCIDR .0 (see its module)
        self._answer_arp = getattr(routes.backend, "answer_arp", None)
        self._vtep_ip = ip_network(node.pod_cidr, strict=False).network_address.packed
        self._local_net = routes.own_prefix
        self._gw, self._own = nat.gw, nat.own
        self._service_net = net_mask(node.service_cidr, f"node {node.name} service_cidr")
        self._cluster_net = nat.cluster_net
        self._fragments = nat.fragments
        self._new_flow, self._dead_flow, self._deny = nat.new_flow, nat.dead_flow, nat.deny
        self._stats = verdicts.stats
        self._drop, self._answer, self._too_big = verdicts.drop, verdicts.answer, verdicts.too_big
        self._emit_forward = verdicts.emit_forward
        # the largest segment of the super-packet being routed (0: an ordinary packet)
        self._segment_bytes = 0
        # bytes in front of the inner packet in an underlay output (VXLAN's 22, else 0)
        self.headroom_bytes = routes.backend.headroom_bytes

    # -- tables (see the parts) ------------------------------------------------------------------

    def set_peer(
        self,
        name: str,
        pod_cidr: str,
        underlay_ip: str,
        vtep_mac: str,
        vxlan_port: int = 4789,
        ready: bool = True,
    ) -> None:
        """Route ``pod_cidr`` to a peer node's VTEP (``RouteTable.set_peer``)."""
        self.routes.set_peer(name, pod_cidr, underlay_ip, vtep_mac, vxlan_port, ready)

    def remove_peer(self, name: str) -> None:
        self.routes.remove_peer(name)

    def add_local_pod(self, ip: str, port_id: Any) -> None:
        """Deliver ``ip`` to ``port_id`` (``RouteTable.add_local_pod``)."""
        self.routes.add_local_pod(ip, port_id)

    def remove_local_pod(self, ip: str) -> None:
        self.routes.remove_local_pod(ip)

    def set_service(
        self, key: str, entry: ServiceEntry, backends: dict[str, list[Backend]]
    ) -> None:
        """Install/replace a service (``ServiceNat.set_service``)."""
        self.nat.set_service(key, entry, backends)

    def remove_service(self, key: str) -> None:
        self.nat.remove_service(key)

    def next_backend(
        self, service_port: str, failed_ip: str, failed_port: int, client_ip: str, now: float
    ) -> tuple[str, int] | None:
        """Userspace-mode retry (``ServiceNat.next_backend``)."""
        return self.nat.next_backend(service_port, failed_ip, failed_port, client_ip, now)

    def set_policy_gate(self, gate: PolicyGate | None) -> None:
        """Enforce NetworkPolicy through ``gate``; None (no local pod isolated) costs the
        packet path nothing but one check."""
        self._policy = self.nat.policy = gate

    def set_forward_events(self, enabled: bool) -> None:
        """Record flow events of forwarded packets too (drops and refusals always are)."""
        self.verdicts.set_forward_events(enabled)
        self._forward_sink = self.verdicts.forward_sink

    # -- timers and introspection --------------------------------------------------------------

    def expire(self, now: float) -> None:
        """Drop conntrack entries, affinities and fragments idle past their timeouts."""
        self.nat.expire(now)

    def next_timer(self) -> float | None:
        """When ``expire`` next has something to do (None: nothing pending)."""
        return self.nat.next_timer()

    def statistics(self) -> dict[str, int]:
        """Counters; drops are ``drop_<reason>``.  Includes ``conntrack_entries``."""
        out = dict(self._stats)
        out["conntrack_entries"] = len(self.conntrack)
        # the backend's own counters (VXLAN: inner checksums it completed), if it keeps any
        backend_statistics = getattr(self.backend, "statistics", None)
        if backend_statistics is not None:
            out.update(backend_statistics())
        return out

    def routes_snapshot(self) -> dict[str, Any]:
        """Peers and local pods, JSON-serialisable."""
        return self.routes.snapshot()

    def table_snapshot(self) -> dict[str, Any]:
        """JSON-serialisable peers, local pods, services with backends, conntrack, counters."""
        return {
            "node": self.node.name,
            "proxy_mode": self.services.mode,
            **self.routes.snapshot(),
            "services": self.services.snapshot(),
            "conntrack": [e.to_dict() for e in self.conntrack.entries()],
            "counters": self.statistics(),
        }

    # -- packet entry points -------------------------------------------------------------------

    def handle_pod(
        self, port_id: Any, packet: bytes | bytearray, now: float, gso_size: int = 0
    ) -> Output | None:
        """A packet a pod sent (read from its TUN).  With ``gso_size``, a TCP super-packet
        (``dataplane.offload``) routed once for all the segments it stands for; the output is
        the super-packet, for the caller to cut where it must."""
        if type(packet) is not bytes:
            packet = bytes(packet)  # dict keys are sliced from it: bytearray is unhashable
        if gso_size:
            return self._super_packet(packet, gso_size, FROM_POD, port_id, now)
        own = self._pod_ips.get(port_id)
        if own is None:
            return self._drop(Drop.UNKNOWN_PORT, packet, ev.POINT_FROM_POD, now)
        if len(packet) >= 20 and packet[0] >> 4 == 4 and packet[12:16] != own:
            # A pod may only send from its own IP (Calico's per-interface RPF check).
            return self._drop(Drop.SPOOFED_SOURCE, packet, ev.POINT_FROM_POD, now)
        return self._process(packet, FROM_POD, port_id, now)

    def handle_host(self, packet: bytes | bytearray, now: float) -> Output | None:
        """A packet the node's own kernel routed into the host TUN."""
        if type(packet) is not bytes:
            packet = bytes(packet)
        return self._process(packet, FROM_HOST, None, now)

    def handle_underlay(
        self, datagram: bytes | bytearray, src_addr: tuple[str, int], now: float
    ) -> Output | None:
        """A datagram from the underlay socket (a VXLAN UDP payload, an IP-in-IP packet):
        the backend decapsulates it; only known peers are accepted."""
        # ``decapsulate`` then ``handle_decapsulated``, inlined: this is the per-datagram path
        if type(datagram) is not bytes:
            datagram = bytes(datagram)
        inner = self._decapsulate(datagram, src_addr)
        if type(inner) is not bytes:
            return self._not_decapsulated(datagram, cast(Drop, inner), src_addr, now)
        peer = self._peer_by_ip.get(src_addr[0])
        if peer is None:
            return self._drop(Drop.UNKNOWN_PEER, b"", ev.POINT_DECAP, now)
        self._stats["decapsulated"] += 1
        return self._process(inner, FROM_UNDERLAY, peer, now)

    def decapsulate(
        self, datagram: bytes | bytearray, src_addr: tuple[str, int], now: float
    ) -> tuple[bytes | None, Peer | None, Output | None]:
        """(inner packet, peer, None) for a datagram from a known peer; else (None, None,
        what to do instead: an ARP reply, or None for a counted drop)."""
        if type(datagram) is not bytes:
            datagram = bytes(datagram)
        inner = self._decapsulate(datagram, src_addr)
        if type(inner) is not bytes:
            return None, None, self._not_decapsulated(datagram, cast(Drop, inner), src_addr, now)
        peer = self._peer_by_ip.get(src_addr[0])
        if peer is None:
            return None, None, self._drop(Drop.UNKNOWN_PEER, b"", ev.POINT_DECAP, now)
        self._stats["decapsulated"] += 1
        return inner, peer, None

    def _not_decapsulated(
        self, datagram: bytes, reason: Drop, src_addr: tuple[str, int], now: float
    ) -> Output | None:
        """A counted drop, or the ARP reply of a VXLAN VTEP asked for its address."""
        if reason is Drop.NOT_IPV4 and self._answer_arp is not None:
            reply = self._answer_arp(datagram, self._vtep_ip)
            peer = self._peer_by_ip.get(src_addr[0])
            if reply is not None and peer is not None:
                self._stats["arp_replies"] = self._stats.get("arp_replies", 0) + 1
                return (OUT_UNDERLAY, peer.addr, reply)
        return self._drop(reason, b"", ev.POINT_DECAP, now)

    def handle_decapsulated(
        self, inner: bytes, peer: Peer, now: float, gso_size: int = 0
    ) -> Output | None:
        """The inner packet ``decapsulate`` returned (with ``gso_size``: several of them
        coalesced into one TCP super-packet, see ``handle_pod``)."""
        if gso_size:
            return self._super_packet(inner, gso_size, FROM_UNDERLAY, peer, now)
        return self._process(inner, FROM_UNDERLAY, peer, now)

    def _super_packet(
        self, packet: bytes, gso_size: int, origin: str, via: Any, now: float
    ) -> Output | None:
        """Route a super-packet once; ``_build`` checks its largest segment against the MTU
        (``_segment_bytes``, 0 again for every ordinary packet)."""
        self._segment_bytes = self._count_segments(packet, gso_size)
        try:
            if origin is FROM_POD:
                return self.handle_pod(via, packet, now)
            return self._process(packet, origin, via, now)
        finally:
            self._segment_bytes = 0

    def _count_segments(self, packet: bytes, gso_size: int) -> int:
        """Count a super-packet's segments; return the length of its largest one (what must
        fit the underlay MTU), or 0 when it is too short to be one."""
        ihl = (packet[0] & 0x0F) << 2 if packet else 0
        if len(packet) < ihl + 20 or ihl < 20 or packet[9] != 6:
            return 0  # not TCP: routed as the packet it is, the MTU check on its length
        hl = ihl + ((packet[ihl + 12] >> 4) << 2)
        stats = self._stats
        stats["offload_super_packets"] = stats.get("offload_super_packets", 0) + 1
        segments = max(1, -(-(len(packet) - hl) // gso_size))
        stats["offload_segments"] = stats.get("offload_segments", 0) + segments
        return hl + min(gso_size, max(len(packet) - hl, 0))

    # -- the pipeline --------------------------------------------------------------------------

    def _process(self, pkt: bytes, origin: str, via: Any, now: float) -> Output | None:
        n = len(pkt)
        if n < 20:
            return self._drop(Drop.TRUNCATED, pkt, origin, now)
        b0 = pkt[0]
        if b0 >> 4 != 4:
            return self._drop(Drop.NOT_IPV4, pkt, origin, now)
        ihl = (b0 & 0x0F) << 2
        total = pkt[2] << 8 | pkt[3]
        if ihl < 20 or total < ihl or total > n:
            return self._drop(Drop.TRUNCATED, pkt, origin, now)
        if origin is FROM_UNDERLAY and wire.ipv4_header_checksum(pkt, ihl):
            # Pods' and the node's kernels write valid headers; the underlay may corrupt them.
            return self._drop(Drop.BAD_CHECKSUM, pkt, origin, now)
        if total != n:
            pkt = pkt[:total]  # link-layer padding
        proto = pkt[9]
        fragment = pkt[6] & 0x1F or pkt[7]
        if (proto == 6 or proto == 17) and not fragment:
            if total < ihl + (20 if proto == 6 else 8):
                return self._drop(Drop.TRUNCATED, pkt, origin, now)
            return self._process_ports(pkt, ihl, proto, origin, via, now)
        if fragment and self._fragments:
            # A later fragment has no ports: it follows its first fragment's translation
            # (matched on src, dst, IP ID, protocol as RFC 791 reassembly does); ihl 0 tells
            # _build to rewrite the addresses only.
            hit = self._fragments.get(pkt[12:20] + pkt[4:6] + pkt[9:10])
            if hit is not None:
                return self._forward(pkt, 0, hit[0].addrs[4:8], hit[0], origin, via, now)
        elif proto == 1 and (self.conntrack.tables[17] or self.conntrack.tables[6]):
            related = self.conntrack.related_icmp(pkt, ihl)
            if related is not None:
                self._stats["unnat"] += 1
                pkt = related
        return self._forward(pkt, ihl, pkt[16:20], None, origin, via, now)

    def _process_ports(
        self, pkt: bytes, ihl: int, proto: int, origin: str, via: Any, now: float
    ) -> Output | None:
        """TCP/UDP: conntrack first, then kube-proxy's rules for a flow's first packet."""
        key = pkt[12:24] if ihl == 20 else pkt[12:20] + pkt[ihl : ihl + 4]
        table = self.conntrack.tables[proto]
        half = table.get(key) if table else None
        if half is not None and now - half.entry.last_seen > half.entry.timeout:
            self.conntrack.remove(half.entry)  # idle past its timeout: a new flow
            half = None
        if half is not None and proto == 6 and not half.reply and pkt[ihl + 13] & 0x12 == 0x02:
            # A new connection reusing a finished flow's tuple (TIME_WAIT reuse): like Linux
            # conntrack (nf_conntrack_proto_tcp, SYN in TIME_WAIT/CLOSE), forget the old entry
            # and let the SYN pick a live backend through the service rules again.
            entry = half.entry
            if entry.dead or entry.state in (FIN_WAIT, CLOSE):
                self.conntrack.remove(entry)
                half = None
        dst = pkt[16:20]
        if half is None:
            if dst in self.services.vips:
                rule = self.services.rules[proto].get(dst + key[10:12])
                if rule is not None:
                    res = self._new_flow(rule, key, pkt, ihl, origin, via, now)
                    if not isinstance(res, CtHalf):
                        return res
                    half = res
        elif half.entry.dead:
            return self._dead_flow(half, pkt, origin, via, now)
        if half is not None:
            dst = half.addrs[4:8]
            if pkt[6] & 0x20:  # MF: the first fragment; the others will follow its NAT
                self._remember_fragment(pkt, half, now)
        return self._forward(pkt, ihl, dst, half, origin, via, now)

    def _remember_fragment(self, pkt: bytes, half: CtHalf, now: float) -> None:
        if len(self._fragments) >= _FRAGMENTS_MAX:  # bounded: forget the oldest
            del self._fragments[next(iter(self._fragments))]
        self._fragments[pkt[12:20] + pkt[4:6] + pkt[9:10]] = (half, now)

    def _forward(
        self,
        pkt: bytes,
        ihl: int,
        dst: bytes,
        half: CtHalf | None,
        origin: str,
        via: Any,
        now: float,
    ) -> Output | None:
        """Route on the final destination, then build the output with every rewrite."""
        to: Any = self._pods.get(dst)
        if to is not None:
            kind = OUT_POD
        elif dst == self._gw:
            kind = OUT_HOST
        else:
            for plen in self._prefix_lens:
                to = self._routes.get(dst[:plen])
                if to is not None:
                    break
            if to is not None:
                kind = OUT_UNDERLAY
            else:
                miss = self._unrouted(pkt, dst, origin, via, now)
                if isinstance(miss, Peer):
                    to, kind = miss, OUT_UNDERLAY
                elif miss is not _TO_HOST:
                    return miss
                else:
                    kind = OUT_HOST
        if self._policy is not None and not self._policy.admit(
            pkt, ihl, dst, half, origin, kind is OUT_POD, now
        ):
            return self._deny(pkt, half, origin, now)
        return self._build(pkt, ihl, kind, to, half, origin, via, now)

    def _build(
        self,
        pkt: bytes,
        ihl: int,
        kind: OutKind,
        to: Any,
        half: CtHalf | None,
        origin: str,
        via: Any,
        now: float,
    ) -> Output | None:
        """The output buffer (with the backend's headroom when encapsulating) and every
        rewrite in it: NAT, TTL, checksums, each updated incrementally."""
        dec = origin is not FROM_HOST and kind is not OUT_HOST
        if dec and pkt[8] <= 1:
            return self._answer(
                Drop.TTL_EXCEEDED, pkt, wire.ICMP_TIME_EXCEEDED, 0, origin, via, now
            )
        if kind is OUT_UNDERLAY:
            if (self._segment_bytes or len(pkt)) > self.node.mtu:
                return self._too_big(pkt, origin, via, now)
            buf = bytearray(to.encap)
            buf += pkt
            o = to.o
        else:
            buf = bytearray(pkt)
            o = 0
        ip_delta = 0
        if half is not None:
            ip_delta = half.ip_delta
            if ihl:
                self._translate(buf, o, ihl, half, now)
            else:
                buf[o + 12 : o + 20] = half.addrs
        if dec:
            buf[o + 8] -= 1
            ip_delta += _TTL_DELTA
        if ip_delta:
            hc = _adjust(buf[o + 10] << 8 | buf[o + 11], ip_delta)
            buf[o + 10] = hc >> 8
            buf[o + 11] = hc & 0xFF
        stats = self._stats
        stats["forwarded"] += 1
        stats[kind.stat] += 1
        if self._forward_sink is not None:
            self._emit_forward(kind, to, bytes(buf[o:]), pkt, half, origin, via, now)
        if kind is OUT_UNDERLAY:
            return (OUT_UNDERLAY, to.addr, buf)
        return (kind, to, buf)

    def _translate(self, buf: bytearray, o: int, ihl: int, half: CtHalf, now: float) -> None:
        """Apply a conntrack half: addresses, ports, TCP/UDP checksum; update the entry."""
        proto = buf[o + 9]
        buf[o + 12 : o + 20] = half.addrs
        p = o + ihl
        buf[p : p + 4] = half.ports
        c = p + (16 if proto == 6 else 6)
        old = buf[c] << 8 | buf[c + 1]
        if proto == 6 or old:  # a UDP checksum of 0 means "none" and stays 0 (RFC 768)
            new = _adjust(old, half.l4_delta)
            if proto == 17 and new == 0:
                new = 0xFFFF
            buf[c] = new >> 8
            buf[c + 1] = new & 0xFF
        entry = half.entry
        entry.last_seen = now
        if half.reply:
            entry.replied = True
            self._stats["unnat"] += 1
        else:
            self._stats["dnat"] += 1
        if proto == 6:
            flags = buf[p + 13]
            if flags & 0x07 or (half.reply and entry.state == "SYN_SENT"):
                self.conntrack.tcp_update(entry, flags, half.reply)

    # -- refusals, answers and drops -----------------------------------------------------------

    def _unrouted(
        self, pkt: bytes, dst: bytes, origin: str, via: Any, now: float
    ) -> Output | Peer | None:
        """No pod, gateway or peer route: decide by which range ``dst`` is in."""
        if dst[: len(self._local_net)] == self._local_net:
            return self._drop(Drop.UNKNOWN_POD, pkt, origin, now)
        addr = int.from_bytes(dst, "big")
        net, mask = self._service_net
        if addr & mask == net:
            # A service CIDR address with no rule for this protocol/port (deleted service,
            # wrong port): refuse at once instead of letting the client time out.
            code = wire.ICMP_PORT_UNREACH if dst in self.services.vips else wire.ICMP_NET_UNREACH
            return self._answer(
                Drop.NO_SERVICE, pkt, wire.ICMP_DEST_UNREACH, code, origin, via, now
            )
        net, mask = self._cluster_net
        if self._native and origin is not FROM_HOST and addr & mask == net:
            # Native routing: the node's kernel forwards it by the route BGP learned.  One
            # that comes back from the kernel (no such route: withdrawn) is dropped below.
            return _TO_HOST
        if origin is FROM_HOST and addr & mask != net:
            # The node itself (or a hostNetwork pod) reaching a service whose backend is
            # another node's IP (a hostNetwork pod there): the flow, masqueraded to our
            # gateway, crosses the overlay to that node, whose router hands it to its host;
            # the reply comes back the same way to be un-NATed here.  A flow DNATed to our
            # own node IP goes back to the host; anything else from the host would loop.
            peer = self._peer_by_ip.get(wire.bytes_to_ip(dst))
            if peer is not None:
                return peer
        if addr & mask == net or (origin is FROM_HOST and dst != self._own[1]):
            return self._drop(Drop.NO_ROUTE, pkt, origin, now)
        return _TO_HOST  # outside the cluster: the node's own stack routes it, as on a real node


_TO_HOST: Output = (OUT_HOST, None, b"")  # sentinel from _unrouted: hand it to the node's stack
