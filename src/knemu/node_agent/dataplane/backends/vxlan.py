"""VXLAN, RFC 7348: ``08 00 00 00 | VNI | 00``, an inner Ethernet header, the IP packet, in
UDP to the peer's VTEP (flannel's vxlan backend; Linux ``vxlan`` devices interoperate).

Three details make a Linux ``vxlan`` device a full peer, as the kernel's own VTEP behaves:

* Outer UDP source port (RFC 7348 section 5): "a hash of fields from the inner packet" in the
  dynamic range 49152-65535, so that underlay ECMP and RSS spread flows while one flow keeps one
  path.  ``source_port`` hashes the inner addresses and protocol, plus the ports of an
  unfragmented TCP/UDP packet (a fragment carries no ports, so every fragment of a datagram
  hashes alike: the kernel's flow dissector does the same).  The range is configurable; a range
  of one port is a fixed source port.
* Outer DF: the kernel leaves it clear unless ``df set`` is configured (``ip-link(8)``); ``df``
  says which, and the underlay socket applies it.
* ARP for the VTEP's own address.  flannel gives a node's VTEP the first address of its
  podCIDR (``10.244.N.0/32`` on ``flannel.1``), and a kernel VTEP answers an ARP request for it
  arriving over VXLAN like any interface does (RFC 826) -- so a peer may resolve it instead of
  being given a permanent neighbour entry.  ``answer_arp`` builds that reply; the router sends
  it back to the asking peer's VTEP (only to known peers: with learning off, the kernel too
  replies only where its FDB has the asker).
* Inner checksums left partial.  A Linux sender with checksum offload (the default) leaves an
  inner TCP/UDP checksum CHECKSUM_PARTIAL: the field holds only the folded pseudo-header sum
  and the NIC -- or the receiving kernel, which keeps the "checksum pending" state across a
  veth -- would finish it.  Reading the datagram through a UDP socket loses that state, and a
  pod's kernel would drop the inner packet as corrupt (``TcpInCsumErrors``).  ``decapsulate``
  recognises such a field (it equals the pseudo-header sum, which a complete checksum does only
  by a 1-in-65535 chance, when completing it again changes nothing) and completes it, counting
  ``inner_checksum_completed``; any other checksum is passed on for the pod's kernel to verify.
"""

from __future__ import annotations

from struct import Struct
from zlib import crc32

from knemu.node_agent.dataplane.backends.base import TRANSPORT_UDP, PeerAddress, PeerLink
from knemu.node_agent.events import DropReason
from knemu.proto import wire

_ETH_IPV4 = b"\x08\x00"
_ETH_ARP = b"\x08\x06"
_ARP_REQUEST = b"\x00\x01\x08\x00\x06\x04\x00\x01"  # RFC 826: Ethernet, IPv4, 6, 4, request
_ARP_REPLY = _ARP_REQUEST[:7] + b"\x02"
_HEADROOM = wire.VXLAN_HEADER + wire.ETHERNET_HEADER  # 22: what the router puts in front
_MIN_DATAGRAM = _HEADROOM + 20
_IP = _HEADROOM  # where the inner IPv4 header starts in a VXLAN payload
# the inner total length, protocol and both addresses as one integer, in one C call
_INNER_IP = Struct("!24xH5xB2xQ").unpack_from

DYNAMIC_PORTS = (49152, 65535)  # RFC 7348 section 5 / RFC 6335: the outer source port range
DF_UNSET, DF_SET = "unset", "set"  # ip-link(8) vxlan ``df``: the kernel's default is unset
DF_MODES = (DF_UNSET, DF_SET)


class VxlanBackend:
    """This node's VTEP: its VNI, MAC (the inner Ethernet destination peers use) and port."""

    name = "vxlan"
    overhead_bytes = wire.VXLAN_OVERHEAD  # outer IPv4 20 + UDP 8 + VXLAN 8 + Ethernet 14
    headroom_bytes = _HEADROOM  # VXLAN header + inner Ethernet header
    transport = TRANSPORT_UDP

    def __init__(
        self,
        vni: int,
        vtep_mac: str,
        port: int = 4789,
        source_ports: tuple[int, int] = DYNAMIC_PORTS,
        df: str = DF_UNSET,
    ) -> None:
        self.header = wire.vxlan_header(vni)  # ValueError names the VNI
        self.mac = wire.mac_to_bytes(vtep_mac)
        self.port = port
        low, high = source_ports
        if not 1 <= low <= high <= 65535:
            raise ValueError(f"source port range {low}-{high} is not within 1-65535, low-high")
        if df not in DF_MODES:
            raise ValueError(f"df {df!r} is not one of {', '.join(DF_MODES)}")
        self.source_ports = (low, high)
        self.df = df
        self._low, self._span = low, high - low + 1
        self._vni = self.header[4:7]
        self.stats = {"inner_checksum_completed": 0}

    def statistics(self) -> dict[str, int]:
        return dict(self.stats)

    def peer_link(self, peer: PeerAddress) -> PeerLink:
        eth = wire.mac_to_bytes(peer.vtep_mac) + self.mac + _ETH_IPV4
        return PeerLink(self.header + eth, (peer.underlay_ip, peer.port or self.port))

    def encapsulate(self, packet: bytes, peer: PeerAddress) -> tuple[bytes, tuple[str, int]]:
        link = self.peer_link(peer)
        return link.headroom + packet, link.destination

    def source_port(self, datagram: bytes | bytearray) -> int:
        """The outer UDP source port for a VXLAN payload: stable per inner flow."""
        if self._span == 1:
            return self._low
        ihl = (datagram[_IP] & 0x0F) << 2
        proto = datagram[_IP + 9]
        key = datagram[_IP + 12 : _IP + 20]  # the inner addresses
        if (proto == 6 or proto == 17) and not (datagram[_IP + 6] & 0x3F or datagram[_IP + 7]):
            key += datagram[_IP + ihl : _IP + ihl + 4]  # and ports, unless a fragment
        return self._low + crc32(key, proto) % self._span

    def answer_arp(self, datagram: bytes, vtep_ip: bytes) -> bytes | None:
        """The VXLAN payload answering ``datagram`` when it carries an ARP request for
        ``vtep_ip`` (4 bytes), else None.  (Run where ``decapsulate`` said not_ipv4.)"""
        frame = datagram[8:]
        if (
            len(frame) < 42
            or frame[12:14] != _ETH_ARP
            or frame[14:22] != _ARP_REQUEST
            or frame[38:42] != vtep_ip
        ):
            return None
        asker_mac, asker_ip = frame[22:28], frame[28:32]
        arp = _ARP_REPLY + self.mac + vtep_ip + asker_mac + asker_ip
        return self.header + asker_mac + self.mac + _ETH_ARP + arp

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
        total, proto, addresses = _INNER_IP(datagram)
        if proto == 6 or proto == 17:
            # The cheap test of ``complete_partial_checksum`` first, for the common 20-byte
            # header: is the field the pseudo-header sum (mod 0xFFFF)?  Only then the full one.
            at = 58 if proto == 6 else 48  # 22 + 20 + 16 (TCP) or 6 (UDP)
            if datagram[_IP] != 0x45 or (
                len(datagram) > at + 1
                and not (addresses + total + proto - 20 - (datagram[at] << 8 | datagram[at + 1]))
                % 0xFFFF
            ):
                completed = complete_partial_checksum(datagram[22:])
                if completed is not None:
                    self.stats["inner_checksum_completed"] += 1
                    return completed
        return datagram[22:]


def complete_partial_checksum(packet: bytes) -> bytes | None:
    """``packet`` (IPv4, TCP or UDP) with its transport checksum completed when the field holds
    only the pseudo-header sum (a CHECKSUM_PARTIAL sender's); None when it holds anything else
    or the packet is too short, a fragment, or a UDP datagram without a checksum."""
    n = len(packet)
    if n < 28 or packet[6] & 0x3F or packet[7]:
        return None
    ihl = (packet[0] & 0x0F) << 2
    total = packet[2] << 8 | packet[3]
    field_at = ihl + (16 if packet[9] == 6 else 6)
    if ihl < 20 or total > n or field_at + 2 > total:
        return None
    field = packet[field_at] << 8 | packet[field_at + 1]
    if field == 0 and packet[9] == 17:
        return None  # UDP without a checksum (RFC 768)
    # One's-complement sums are sums modulo 0xFFFF: the 8 address bytes as one integer, plus
    # the protocol and the segment length, congruent to the field means "pseudo-header only".
    length = total - ihl
    if (int.from_bytes(packet[12:20], "big") + packet[9] + length - field) % 0xFFFF:
        return None
    # The checksum covers the pseudo-header and the segment with the field zeroed: as the
    # field holds the pseudo-header sum, that is the sum of the segment as it stands.  Words
    # of a big-endian integer sum to it modulo 0xFFFF (2**16 = 1 mod 0xFFFF), so one C-speed
    # remainder replaces a word loop; a remainder of 0 is the sum 0xFFFF ("negative zero",
    # RFC 1071): a sum including the non-zero protocol word is never +0.
    segment = packet[ihl:total]
    sum_ = int.from_bytes(segment, "big") << (8 * (length & 1))  # odd: pad with a zero byte
    value = 0xFFFF - (sum_ % 0xFFFF or 0xFFFF)
    if value == 0 and packet[9] == 17:
        value = 0xFFFF  # RFC 768: a computed 0 is sent as all ones
    return packet[:field_at] + value.to_bytes(2, "big") + packet[field_at + 2 :]
