"""``knemu trace``: one probe packet followed hop by hop (sans-I/O parts plus one coroutine).

The probe is injected into the router exactly as if the pod had sent it (``handle_pod``), so
it meets the same conntrack, service DNAT, routing and encapsulation as the pod's own traffic;
the flow events it causes on this node are the local hops.  The destination's reply (SYN-ACK,
UDP answer, ICMP echo reply or an ICMP/RST refusal) comes back through the same router and is
reported too; the pod's kernel then answers the unexpected SYN-ACK with a RST, as it would for
any stray segment (RFC 9293 section 3.10.7.1), so the probe leaves no connection behind.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from knemu.errors import LocalError
from knemu.node_agent.dataplane.flows import FlowLog
from knemu.node_agent.events import FiveTuple, FlowEvent
from knemu.proto import wire

# Feed a packet to the router as if pod ``key`` had sent it, and send what comes out.
Inject = Callable[[str, bytes, float], None]

PROTOCOLS = ("TCP", "UDP", "ICMP")
TRACE_PAYLOAD = b"knemu-trace"
# Not seeded: two traces from one pod must not reuse a source port still in conntrack.
_rng = random.SystemRandom()


@dataclass(frozen=True)
class Probe:
    pod: str  # "namespace/name" of the sender
    dst: str  # an IPv4 address: pod IP, ClusterIP, node IP
    port: int = 0
    protocol: str = "TCP"
    wait_ms: int = 500  # how long to collect replies on this node

    @classmethod
    def from_dict(cls, data: Any) -> Probe:
        if not isinstance(data, dict):
            raise LocalError("trace: the body must be a JSON object")
        try:
            probe = cls(
                pod=str(data["pod"]), dst=str(data["dst"]), port=int(data.get("port", 0)),
                protocol=str(data.get("protocol", "TCP")).upper(),
                wait_ms=int(data.get("wait_ms", 500)),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise LocalError(f"trace: need pod, dst and a numeric port ({exc})") from None
        probe.validate()
        return probe

    def validate(self) -> None:
        if "/" not in self.pod:
            raise LocalError(f"trace: pod {self.pod!r} must be NAMESPACE/NAME")
        try:
            ipaddress.IPv4Address(self.dst)
        except ValueError:
            raise LocalError(f"trace: destination {self.dst!r} is not an IPv4 address") from None
        if self.protocol not in PROTOCOLS:
            raise LocalError(f"trace: protocol {self.protocol!r}: use TCP, UDP or ICMP")
        if self.protocol != "ICMP" and not 1 <= self.port <= 65535:
            raise LocalError(f"trace: {self.protocol} needs --port between 1 and 65535")
        if not 0 <= self.wait_ms <= 10_000:
            raise LocalError("trace: wait_ms must be between 0 and 10000")


def build_packet(probe: Probe, src_ip: str, ident: int) -> bytes:
    """The probe as the pod would send it; ``ident`` is the source port or ICMP echo id."""
    if probe.protocol == "TCP":
        seg = wire.TcpSegment(ident, probe.port, seq=_rng.getrandbits(32), flags=wire.TCP_SYN)
        return wire.tcp_packet(src_ip, probe.dst, seg)
    if probe.protocol == "UDP":
        return wire.udp_packet(src_ip, probe.dst, ident, probe.port, TRACE_PAYLOAD)
    echo = wire.IcmpMessage(wire.ICMP_ECHO_REQUEST, 0, ident.to_bytes(2, "big") + b"\0\1",
                            TRACE_PAYLOAD)  # fmt: skip
    return wire.ip_packet(src_ip, probe.dst, wire.PROTO_ICMP, wire.encode_icmp(echo))


def _side(t: FiveTuple, ip: str | None, port: int | None) -> bool:
    if ip is None:
        return port is None or port in (t.src_port, t.dst_port)
    return (t.src_ip == ip and (port is None or t.src_port == port)) or (
        t.dst_ip == ip and (port is None or t.dst_port == port)
    )


def touches(event: FlowEvent, ip: str | None, port: int | None) -> bool:
    """Does the event's flow (before or after translation) have ``ip``:``port`` on a side?"""
    if ip is None and port is None:
        return True
    tuples = (event.flow, getattr(event, "translated", None))
    return any(t is not None and _side(t, ip, port) for t in tuples)


async def run_probe(
    flows: FlowLog, inject: Inject, node_name: str, probe: Probe, src_ip: str
) -> dict[str, Any]:
    """Inject the probe from ``src_ip`` and collect this node's hops (from ``flows``) for
    ``wait_ms``."""
    ident = _rng.randrange(40000, 60000)
    port = None if probe.protocol == "ICMP" else ident
    hops: list[FlowEvent] = []
    token = flows.subscribe(hops.append, lambda e: touches(e, src_ip, port))
    loop = asyncio.get_running_loop()
    now = loop.time()
    try:
        inject(probe.pod, build_packet(probe, src_ip, ident), now)
        await asyncio.sleep(probe.wait_ms / 1000)  # a collection window, like traceroute's -w
    finally:
        flows.unsubscribe(token)
    return {
        "node": node_name, "time": now, "hops": hops,
        "probe": {"protocol": probe.protocol, "src_ip": src_ip, "src_port": ident,
                  "dst_ip": probe.dst, "dst_port": probe.port, "pod": probe.pod},
    }  # fmt: skip
