"""Which node announces each LoadBalancer address, MetalLB layer-2 style (sans-I/O).

MetalLB's L2 mode (https://metallb.universe.tf/concepts/layer2/) makes exactly one node answer
ARP for a service's address; every node computes the same choice from the same inputs, so no
coordination is needed: the candidate nodes are the Ready ones (for a service with
``externalTrafficPolicy: Local``, only those with a ready endpoint of it), ordered by
``sha256(node name + "#" + address)``, and the first one announces (MetalLB speaker
``layer2_controller.go``, ``ShouldAnnounce``).  When that node stops being Ready the next one
in the order takes over and announces with a gratuitous ARP so clients re-learn the MAC at
once (RFC 5227 section 3, "ARP Announcement"); ``garp`` builds that frame.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6


@dataclass(frozen=True)
class LoadBalancerAddress:
    """One address of ``status.loadBalancer.ingress`` and who may announce it."""

    service: str  # "namespace/name"
    ip: str
    local_only: bool = False  # externalTrafficPolicy Local
    endpoint_nodes: frozenset[str] = frozenset()  # nodes with a ready endpoint


def speaker(ip: str, candidates: Iterable[str]) -> str | None:
    """The node that announces ``ip`` among ``candidates`` (None: no candidate)."""
    ordered = sorted(candidates, key=lambda n: (hashlib.sha256(f"{n}#{ip}".encode()).digest(), n))
    return ordered[0] if ordered else None


def announced_by(node: str, addresses: Iterable[LoadBalancerAddress],
                 ready_nodes: Iterable[str]) -> set[str]:  # fmt: skip
    """The addresses ``node`` announces, given every Ready node's name."""
    ready = set(ready_nodes)
    mine = set()
    for addr in addresses:
        candidates = ready & addr.endpoint_nodes if addr.local_only else ready
        if speaker(addr.ip, candidates) == node:
            mine.add(addr.ip)
    return mine


def garp(mac: str, ip: str) -> bytes:
    """An Ethernet frame holding a gratuitous ARP request for ``ip`` from ``mac`` (RFC 5227
    section 3: sender and target IP both the announced address, target MAC zero)."""
    hw = bytes.fromhex(mac.replace(":", ""))
    if len(hw) != 6:
        raise ValueError(f"MAC {mac!r} is not 6 octets")
    addr = ipaddress.IPv4Address(ip).packed
    arp = (
        b"\x00\x01\x08\x00\x06\x04\x00\x01"  # Ethernet, IPv4, hlen 6, plen 4, request
        + hw + addr + b"\x00" * 6 + addr
    )  # fmt: skip
    return BROADCAST + hw + ETH_P_ARP.to_bytes(2, "big") + arp
