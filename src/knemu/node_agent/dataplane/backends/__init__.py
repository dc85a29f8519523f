"""Encapsulation backends of the router (VXLAN, IP-in-IP): see ``base``."""

from __future__ import annotations

from knemu.errors import ConfigError
from knemu.node_agent.dataplane.backends.base import (
    TRANSPORT_IP,
    TRANSPORT_UDP,
    Backend,
    PeerAddress,
    PeerLink,
)
from knemu.node_agent.dataplane.backends.ipip import IpipBackend
from knemu.node_agent.dataplane.backends.native import TRANSPORT_NONE, NativeBackend
from knemu.node_agent.dataplane.backends.vxlan import DF_SET, DF_UNSET, DYNAMIC_PORTS, VxlanBackend

__all__ = [
    "BACKENDS",
    "DF_SET",
    "DF_UNSET",
    "DYNAMIC_PORTS",
    "TRANSPORT_IP",
    "TRANSPORT_NONE",
    "TRANSPORT_UDP",
    "Backend",
    "IpipBackend",
    "NativeBackend",
    "PeerAddress",
    "PeerLink",
    "VxlanBackend",
    "create",
    "overhead_bytes",
]

BACKENDS = ("vxlan", "ipip", "bgp")


def overhead_bytes(name: str) -> int:
    """Header bytes the backend ``name`` adds to each pod packet on the underlay: the pod MTU is
    the underlay's MTU less this (VXLAN 50, IP-in-IP 20, native BGP routing 0)."""
    return {
        "vxlan": VxlanBackend.overhead_bytes,
        "ipip": IpipBackend.overhead_bytes,
        "bgp": NativeBackend.overhead_bytes,
    }.get(name, VxlanBackend.overhead_bytes)


def create(
    name: str,
    *,
    vni: int = 1,
    vtep_mac: str,
    vxlan_port: int = 4789,
    vxlan_source_ports: tuple[int, int] = DYNAMIC_PORTS,
    vxlan_df: str = DF_UNSET,
    node: str = "",
) -> Backend:
    """The backend called ``name``; ConfigError names the node and the choices."""
    if name == "vxlan":
        try:
            return VxlanBackend(vni, vtep_mac, vxlan_port, vxlan_source_ports, vxlan_df)
        except ValueError as exc:
            raise ConfigError(
                f"node {node}: vxlan backend: {exc}; fix the agent's node settings"
            ) from None
    if name == "ipip":
        return IpipBackend()
    if name == "bgp":
        return NativeBackend()
    raise ConfigError(f"node {node}: network backend {name!r} is not one of {', '.join(BACKENDS)}")
