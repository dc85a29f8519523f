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
from knemu.node_agent.dataplane.backends.vxlan import VxlanBackend

__all__ = [
    "BACKENDS",
    "TRANSPORT_IP",
    "TRANSPORT_UDP",
    "Backend",
    "IpipBackend",
    "PeerAddress",
    "PeerLink",
    "VxlanBackend",
    "create",
]

BACKENDS = ("vxlan", "ipip")


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
    raise ConfigError(f"node {node}: network backend {name!r} is not one of {', '.join(BACKENDS)}")
