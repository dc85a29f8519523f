"""Helpers: two nodes' routers wired back to back, and packet builders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from knemu.node_agent.dataplane.router import OUT_UNDERLAY, LocalNode, Output, Router
from knemu.node_agent.events import FlowEvent
from knemu.node_agent.kubeproxy.service_table import Backend, ServiceEntry, ServicePortEntry
from knemu.proto import wire

MAC1 = "02:00:00:00:00:01"
MAC2 = "02:00:00:00:00:02"
UNDERLAY1 = "192.168.59.11"
UNDERLAY2 = "192.168.59.12"
POD_A = "10.244.1.5"  # on node-1, port "a"
POD_C = "10.244.1.6"  # on node-1, port "c"
POD_B = "10.244.2.7"  # on node-2, port "b"
POD_D = "10.244.2.8"  # on node-2, port "d"
VIP = "10.96.0.20"


def node(index: int) -> LocalNode:
    return LocalNode(
        name=f"node-{index}",
        underlay_ip=f"192.168.59.{10 + index}",
        vtep_mac=f"02:00:00:00:00:0{index}",
        pod_cidr=f"10.244.{index}.0/24",
        gateway_ip=f"10.244.{index}.1",
    )


@dataclass
class Pair:
    r1: Router
    r2: Router
    events: list[FlowEvent] = field(default_factory=list)

    def set_service(self, entry: ServiceEntry, backends: dict[str, list[Backend]]) -> None:
        self.r1.set_service(entry.key, entry, backends)
        self.r2.set_service(entry.key, entry, backends)

    def underlay(self, out: Output | None, now: float) -> Output | None:
        """Carry an OUT_UNDERLAY output to the node it is addressed to."""
        assert out is not None and out[0] == OUT_UNDERLAY, out
        dst = out[1][0]
        target, src = (self.r2, UNDERLAY1) if dst == UNDERLAY2 else (self.r1, UNDERLAY2)
        return target.handle_underlay(bytes(out[2]), (src, 40000), now)


def pair(**kwargs: Any) -> Pair:
    events: list[FlowEvent] = []
    r1 = Router(node(1), flow_sink=events.append, **kwargs)
    r2 = Router(node(2), flow_sink=events.append, **kwargs)
    r1.set_peer("node-2", "10.244.2.0/24", UNDERLAY2, MAC2)
    r2.set_peer("node-1", "10.244.1.0/24", UNDERLAY1, MAC1)
    r1.add_local_pod(POD_A, "a")
    r1.add_local_pod(POD_C, "c")
    r2.add_local_pod(POD_B, "b")
    r2.add_local_pod(POD_D, "d")
    return Pair(r1, r2, events)


def web(
    backends: list[Backend], protocol: str = "TCP", affinity_s: float = 0.0, port: int = 80
) -> tuple[ServiceEntry, dict[str, list[Backend]]]:
    entry = ServiceEntry(
        key="default/web",
        cluster_ips=(VIP,),
        ports=(ServicePortEntry("http", protocol, port),),
        session_affinity_timeout_s=affinity_s,
    )
    return entry, {"http": backends}


def syn(src: str, dst: str, sport: int, dport: int, seq: int = 1000) -> bytes:
    return wire.tcp_packet(src, dst, wire.TcpSegment(sport, dport, seq=seq, flags=wire.TCP_SYN))


def tcp(src: str, dst: str, sport: int, dport: int, flags: int, payload: bytes = b"") -> bytes:
    seg = wire.TcpSegment(sport, dport, seq=5, ack=7, flags=flags, payload=payload)
    return wire.tcp_packet(src, dst, seg)


def valid(packet: bytes | bytearray) -> wire.IPv4Packet:
    """Decode with the IP checksum verified and the transport checksum recomputed in full."""
    ip = wire.decode_ipv4(bytes(packet))
    if ip.proto in (wire.PROTO_TCP, wire.PROTO_UDP):
        assert wire.transport_checksum_ok(bytes(packet))
    return ip
