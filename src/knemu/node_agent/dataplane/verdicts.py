"""What every stage of the router answers with: drops (counted, with a named reason), refusals
(TCP RST / ICMP errors sent back where the packet came from) and flow events (sans-I/O)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
)
from knemu.node_agent.events import DropReason as Drop
from knemu.node_agent.kubeproxy.conntrack import CtHalf
from knemu.proto import wire


class Verdicts:
    """The router's counters, its replies and drops, and its flow events."""

    def __init__(
        self,
        node: LocalNode,
        flow_sink: Callable[[ev.FlowEvent], None] | None,
        seal: Callable[[tuple[str, int], bytearray], bytes | None] | None = None,
    ) -> None:
        self.node = node
        self.sink = flow_sink
        self.seal = seal  # --encryption wireguard: answers to a peer are sealed like the rest
        # Forwarded/translated packets are the bulk of flow events and cost several times the
        # routing itself, so they are recorded only while someone watches (set_forward_events);
        # drops and refusals are rare and always recorded.
        self.forward_sink = flow_sink
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "forwarded",
                "delivered",
                "to_host",
                "encapsulated",
                "decapsulated",
                "dnat",
                "unnat",
                "snat",
                "refused",
            ),
            0,
        )

    def refuse(
        self, reason: Drop, pkt: bytes, origin: str, via: Any, now: float, svc: str
    ) -> Output | None:
        """No usable endpoint: TCP RST / ICMP port unreachable from the service address."""
        src = wire.bytes_to_ip(pkt[16:20])
        if pkt[9] == wire.PROTO_TCP:
            reply, kind = wire.tcp_reset_for(pkt), "tcp-rst"
        else:
            reply = wire.icmp_error_for(pkt, wire.ICMP_DEST_UNREACH, wire.ICMP_PORT_UNREACH, src)
            kind = "icmp-port-unreachable"
        return self._send_refusal(reason, kind, reply, pkt, origin, via, now, svc)

    def answer(
        self,
        reason: Drop,
        pkt: bytes,
        icmp_type: int,
        code: int,
        origin: str,
        via: Any,
        now: float,
        rest: bytes = bytes(4),
    ) -> Output | None:
        """An ICMP error from the node's gateway address (ttl_exceeded, no_service, ...)."""
        reply = wire.icmp_error_for(pkt, icmp_type, code, self.node.gateway_ip, rest)
        kind = f"icmp-{icmp_type}-{code}"
        return self._send_refusal(reason, kind, reply, pkt, origin, via, now, "")

    def too_big(self, pkt: bytes, origin: str, via: Any, now: float) -> Output | None:
        """Larger than the overlay MTU: ICMP fragmentation needed (RFC 1191) when DF is set."""
        if not pkt[6] & 0x40:
            return self.drop(Drop.TOO_BIG, pkt, origin, now)
        rest = wire.frag_needed_rest(self.node.mtu)
        return self.answer(
            Drop.TOO_BIG, pkt, wire.ICMP_DEST_UNREACH, wire.ICMP_FRAG_NEEDED, origin, via, now, rest
        )

    def _send_refusal(
        self,
        reason: Drop,
        kind: str,
        reply: bytes | None,
        pkt: bytes,
        origin: str,
        via: Any,
        now: float,
        svc: str,
    ) -> Output | None:
        if reply is None:  # never answer a RST or an ICMP error (RFC 9293, RFC 1122)
            return self.drop(reason, pkt, origin, now)
        self.stats["refused"] += 1
        name = "refused_" + reason
        self.stats[name] = self.stats.get(name, 0) + 1
        if self.sink is not None:
            self.sink(
                ev.FlowRefused(now, self.node.name, origin, ev.flow_of(pkt), reason, kind, svc)
            )
        # Back where the packet came from.
        if origin is FROM_POD:
            return (OUT_POD, via, reply)
        if origin is FROM_HOST:
            return (OUT_HOST, None, reply)
        if self.seal is not None:
            sealed = self.seal(via.addr, bytearray(via.encap + reply))
            return None if sealed is None else (OUT_UNDERLAY, via.addr, sealed)
        return (OUT_UNDERLAY, via.addr, via.encap + reply)

    def drop(
        self, reason: Drop, pkt: bytes, origin: str, now: float, outer: ev.OuterHeader | None = None
    ) -> Output | None:
        name = "drop_" + reason
        self.stats[name] = self.stats.get(name, 0) + 1
        if self.sink is not None:
            self.sink(ev.FlowDropped(now, self.node.name, origin, ev.flow_of(pkt), reason, outer))
        return None

    def set_forward_events(self, enabled: bool) -> None:
        """Record flow events of forwarded packets too (drops and refusals always are)."""
        self.forward_sink = self.sink if enabled else None

    def emit_forward(
        self,
        kind: OutKind,
        to: Any,
        out: bytes,
        pkt: bytes,
        half: CtHalf | None,
        origin: str,
        via: Any,
        now: float,
    ) -> None:
        """Flow events of a forwarded packet (only built when a flow sink is set)."""
        assert self.sink is not None
        node, before, after = self.node.name, ev.flow_of(pkt), ev.flow_of(out)
        if half is not None:
            if half.reply:
                nat = "unnat+unsnat" if half.addrs[4:8] != pkt[16:20] else "unnat"
            else:
                nat = "dnat+snat" if half.addrs[:4] != pkt[12:16] else "dnat"
            svc = half.entry.service
            self.sink(ev.FlowTranslated(now, node, origin, before, nat, after, svc))
        outer = None
        if self.node.encryption == "wireguard":  # sealed in UDP to the peer's port 51820
            if kind is OUT_UNDERLAY:
                outer = ev.OuterHeader(
                    self.node.underlay_ip, to.underlay_ip, to.addr[1], 0, "wireguard"
                )
            elif origin is FROM_UNDERLAY:
                outer = ev.OuterHeader(via.underlay_ip, self.node.underlay_ip, 0, 0, "wireguard")
        elif self.node.backend != "vxlan":  # IP-in-IP: an outer IPv4 header only
            if kind is OUT_UNDERLAY:
                outer = ev.OuterHeader(self.node.underlay_ip, to.underlay_ip, 0, 0, "ipip")
            elif origin is FROM_UNDERLAY:
                outer = ev.OuterHeader(via.underlay_ip, self.node.underlay_ip, 0, 0, "ipip")
        elif kind is OUT_UNDERLAY:
            vni = self.node.vni
            outer = ev.OuterHeader(self.node.underlay_ip, to.underlay_ip, to.vxlan_port, vni)
        elif origin is FROM_UNDERLAY:  # the header it arrived in, from the peer's VTEP
            outer = ev.OuterHeader(
                via.underlay_ip, self.node.underlay_ip, self.node.vxlan_port, self.node.vni
            )
        self.sink(ev.FlowForwarded(now, node, kind.point, after, outer))
