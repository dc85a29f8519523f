"""Published ports as data (sans-I/O): a ``Relay`` (listen address -> target), the NodePort
rules that become relays, their counters, and ``plan`` (which listeners to open and close).
The sockets are ``nodeport.PortProxy``'s; ``cni.portmap`` builds hostPort relays from these."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

RELAYED_PROTOCOLS = ("TCP", "UDP")  # SCTP has no asyncio transport; it is not relayed


@dataclass(frozen=True, order=True)
class Relay:
    """One published port: ``listen_ip:listen_port/protocol`` -> ``target_ip:target_port``."""

    protocol: str  # "TCP" | "UDP"
    listen_ip: str
    listen_port: int
    target_ip: str
    target_port: int

    def __str__(self) -> str:
        return (
            f"{self.listen_ip}:{self.listen_port}/{self.protocol} -> "
            f"{self.target_ip}:{self.target_port}"
        )


@dataclass(frozen=True, order=True)
class NodePortRule:
    protocol: str  # "TCP" | "UDP"
    node_port: int
    cluster_ip: str
    port: int

    def relay(self, listen_ip: str) -> Relay:
        return Relay(self.protocol, listen_ip, self.node_port, self.cluster_ip, self.port)


@dataclass
class ProxyStatistics:
    connections: int = 0
    connect_failures: int = 0
    datagrams: int = 0
    bind_failures: int = 0
    sessions_evicted: int = 0
    # (protocol, port) -> why it cannot be listened on, while that lasts
    bind_errors: dict[tuple[str, int], str] = field(default_factory=dict)


R = TypeVar("R", Relay, NodePortRule)


def plan(current: Iterable[R], desired: Iterable[R]) -> tuple[list[R], list[R]]:
    """(to_close, to_open): a changed target closes the old listener before opening anew."""
    cur, want = set(current), set(desired)
    return sorted(cur - want), sorted(want - cur)
