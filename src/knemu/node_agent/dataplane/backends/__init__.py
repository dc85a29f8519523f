"""Encapsulation backends of the router (VXLAN, IP-in-IP): see ``base``."""

from __future__ import annotations

from knemu.config import POD_MTU_BYTES
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
from knemu.node_agent.dataplane.backends.vxlan import VxlanBackend

__all__ = [
    "BACKENDS",
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
    "pod_mtu_bytes",
]

BACKENDS = ("vxlan", "ipip", "bgp")
UNDERLAY_MTU_BYTES = 1500


def pod_mtu_bytes(name: str, configured: int) -> int:
    """The pod MTU for ``name``: the configured one, except that VXLAN's default (1450,
    underlay 1500 - 50) becomes 1500 - 20 = 1480 for IP-in-IP, 1500 for native routing."""
    if name == "ipip" and configured == POD_MTU_BYTES:
        return UNDERLAY_MTU_BYTES - IpipBackend.overhead_bytes
    if name == "bgp" and configured == POD_MTU_BYTES:
        return UNDERLAY_MTU_BYTES
    return configured


def create(
    name: str, *, vni: int = 1, vtep_mac: str, vxlan_port: int = 4789, node: str = ""
) -> Backend:
    """The backend called ``name``; ConfigError names the node and the choices."""
    if name == "vxlan":
        try:
            return VxlanBackend(vni, vtep_mac, vxlan_port)
        except ValueError as exc:
            raise ConfigError(
                f"node {node}: vxlan backend: {exc}; fix the agent's node settings"
            ) from None
    if name == "ipip":
        return IpipBackend()
    if name == "bgp":
        return NativeBackend()
    raise ConfigError(f"node {node}: network backend {name!r} is not one of {', '.join(BACKENDS)}")
