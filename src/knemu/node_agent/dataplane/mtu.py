"""The pod MTU: the underlay interface's MTU minus VXLAN's 50 bytes, unless set explicitly.

A pod's packet leaves its node inside outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet
(14) headers (RFC 7348 section 5), 50 bytes in all, so a pod MTU of the underlay MTU minus 50
keeps every encapsulated packet within one underlay frame -- what flannel does with its
``vxlan`` backend (the device MTU is the underlay interface's minus 50).  The underlay decides:
a 1500-byte bridge (docker compose, ``knemu up``) gives pods 1450; a Docker Swarm overlay is
itself VXLAN with MTU 1450, so pods there get 1400; a 9001-byte cloud network allows jumbo
pods (capped at 9000, the largest the agent accepts).

This module is the sans-I/O core: ``find_link`` reads ``ip -j addr show`` output and
``choose_pod_mtu`` decides; ``dataplane.underlay.resolve_pod_mtu`` runs iproute2 and calls them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from knemu.errors import ConfigError

ETHERNET_MTU_BYTES = 1500  # an underlay whose link we cannot see is taken to be Ethernet
VXLAN_OVERHEAD_BYTES = 50  # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
MIN_POD_MTU_BYTES = 576  # RFC 791: every IPv4 host accepts 576-byte datagrams
MAX_POD_MTU_BYTES = 9000  # AgentConfig's ceiling: the common jumbo-frame size


@dataclass(frozen=True)
class UnderlayLink:
    """The interface holding the node's underlay address."""

    ifname: str
    mtu_bytes: int


@dataclass(frozen=True)
class PodMtu:
    """The chosen pod MTU and why, for the agent's log."""

    mtu_bytes: int
    reason: str


def choose_pod_mtu(
    configured_bytes: int,
    underlay_ip: str,
    link: UnderlayLink | None,
    overhead_bytes: int = VXLAN_OVERHEAD_BYTES,
    backend: str = "vxlan",
) -> PodMtu:
    """``configured_bytes`` when non-zero; else the underlay link's MTU less the backend's
    ``overhead_bytes`` (VXLAN 50, IP-in-IP 20, BGP 0; clamped); else, when the link is unknown,
    a 1500-byte Ethernet underlay's (1450 for VXLAN)."""
    label = "VXLAN" if backend == "vxlan" else backend
    if configured_bytes:
        return PodMtu(configured_bytes, "set explicitly (--mtu)")
    if link is None:
        return PodMtu(
            ETHERNET_MTU_BYTES - overhead_bytes,
            f"no interface holds underlay address {underlay_ip}; assuming a 1500-byte underlay "
            "(set --mtu to choose)",
        )
    derived = link.mtu_bytes - overhead_bytes
    if derived < MIN_POD_MTU_BYTES:
        raise ConfigError(
            f"underlay interface {link.ifname} has MTU {link.mtu_bytes}: too small for {label} "
            f"pods (needs {MIN_POD_MTU_BYTES + overhead_bytes}); raise it or set --mtu"
        )
    mtu = min(derived, MAX_POD_MTU_BYTES)
    capped = f", capped at {MAX_POD_MTU_BYTES}" if mtu < derived else ""
    return PodMtu(
        mtu,
        f"underlay {link.ifname} MTU {link.mtu_bytes} minus {overhead_bytes} for {label}" + capped,
    )


def find_link(ip_addr_json: str, address: str) -> UnderlayLink | None:
    """The interface holding ``address`` in ``ip -j addr show`` output (None: no such one)."""
    try:
        links = json.loads(ip_addr_json or "[]")
    except json.JSONDecodeError:
        return None
    if not isinstance(links, list):
        return None
    for link in links:
        addresses = link.get("addr_info") if isinstance(link, dict) else None
        if not isinstance(addresses, list):
            continue
        for addr in addresses:
            if isinstance(addr, dict) and addr.get("local") == address:
                mtu = link.get("mtu")
                if isinstance(mtu, int) and isinstance(link.get("ifname"), str):
                    return UnderlayLink(link["ifname"], mtu)
    return None
