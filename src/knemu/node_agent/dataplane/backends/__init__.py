"""Encapsulation backends of the router (VXLAN, IP-in-IP): see ``base``."""

from __future__ import annotations

from knemu.config import ENCRYPTIONS
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
from knemu.node_agent.dataplane.backends.wireguard import KeyPair, WireguardBackend

__all__ = [
    "BACKENDS",
    "DF_SET",
    "DF_UNSET",
    "DYNAMIC_PORTS",
    "ENCRYPTIONS",
    "TRANSPORT_IP",
    "TRANSPORT_NONE",
    "TRANSPORT_UDP",
    "Backend",
    "IpipBackend",
    "KeyPair",
    "NativeBackend",
    "PeerAddress",
    "PeerLink",
    "VxlanBackend",
    "WireguardBackend",
    "create",
    "overhead_bytes",
]

BACKENDS = ("vxlan", "ipip", "bgp")


def overhead_bytes(name: str, encryption: str = "none") -> int:
    """Header bytes the backend ``name`` adds to each pod packet on the underlay: the pod MTU is
    the underlay's MTU less this (VXLAN 50, IP-in-IP 20, native BGP routing 0; WireGuard, which
    replaces the encapsulation between nodes, 60)."""
    if encryption == "wireguard":
        return WireguardBackend.overhead_bytes
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
    encryption: str = "none",
    keys: KeyPair | None = None,
) -> Backend:
    """The backend called ``name`` (WireGuard in its place with ``encryption``); ConfigError
    names the node and the choices."""
    if encryption not in ENCRYPTIONS:
        raise ConfigError(
            f"node {node}: encryption {encryption!r} is not one of {', '.join(ENCRYPTIONS)}"
        )
    if encryption == "wireguard":
        if name == "bgp":
            raise ConfigError(
                f"node {node}: encryption wireguard needs an encapsulating backend; bgp hands "
                "pod packets to the kernel unencapsulated: use --backend vxlan or ipip"
            )
        return WireguardBackend(keys or KeyPair())
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
