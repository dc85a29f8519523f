"""VXLAN, RFC 7348: ``08 00 00 00 | VNI | 00``, an inner Ethernet header, the IP packet, in
UDP to the peer's VTEP (flannel's vxlan backend; Linux ``vxlan`` devices interoperate)."""

from __future__ import annotations

from knemu.node_agent.dataplane.backends.base import TRANSPORT_UDP, PeerAddress, PeerLink
from knemu.node_agent.events import DropReason
from knemu.proto import wire

_ETH_IPV4 = b"\x08\x00"
_HEADROOM = wire.VXLAN_HEADER + wire.ETHERNET_HEADER  # 22: what the router puts in front
_MIN_DATAGRAM = _HEADROOM + 20


class VxlanBackend:
    """This node's VTEP: its VNI, MAC (the inner Ethernet destination peers use) and port."""

    name = "vxlan"
    overhead_bytes = wire.VXLAN_OVERHEAD  # outer IPv4 20 + UDP 8 + VXLAN 8 + Ethernet 14
    transport = TRANSPORT_UDP

    def __init__(self, vni: int, vtep_mac: str, port: int = 4789) -> None:
        self.header = wire.vxlan_header(vni)  # ValueError names the VNI
        self.mac = wire.mac_to_bytes(vtep_mac)
        self.port = port
        self._vni = self.header[4:7]

    def peer_link(self, peer: PeerAddress) -> PeerLink:
        eth = wire.mac_to_bytes(peer.vtep_mac) + self.mac + _ETH_IPV4
        return PeerLink(self.header + eth, (peer.underlay_ip, peer.port or self.port))

    def encapsulate(self, packet: bytes, peer: PeerAddress) -> tuple[bytes, tuple[str, int]]:
        link = self.peer_link(peer)
        return link.headroom + packet, link.destination

    def decapsulate(self, datagram: bytes, source: tuple[str, int]) -> bytes | DropReason:
        """RFC 7348 section 5: the I flag set, our VNI; reserved bits ignored on receipt."""
        if len(datagram) < _MIN_DATAGRAM:
            return DropReason.TRUNCATED
        if datagram[:8] != self.header:
            if not datagram[0] & wire.VXLAN_FLAG_I:
                return DropReason.BAD_VXLAN_HEADER
            if datagram[4:7] != self._vni:
                return DropReason.WRONG_VNI
        dst_mac = datagram[8:14]
        if dst_mac != self.mac and dst_mac != wire.BROADCAST_MAC:
            return DropReason.WRONG_MAC
        if datagram[20:22] != _ETH_IPV4:
            return DropReason.NOT_IPV4
        return datagram[22:]
