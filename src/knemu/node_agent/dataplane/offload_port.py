"""The thin asyncio adapter of a pod's TUN opened with offloads (``tun.open_tun(offload=True)``).

Like ``adapters.TunPort`` (one reader per fd, a batch of reads per wakeup, a capture tap), but
every frame starts with a virtio-net header (``dataplane.offload``):

* read: a TCP super-packet (``GSO_TCPV4``) goes to the sink whole with its ``gso_size``, for the
  router to route once; a packet whose checksum the pod's kernel left to us (``NEEDS_CSUM``)
  is completed first, so everything downstream sees ordinary packets;
* write: ``write`` prefixes an all-zero header (a whole packet, checksum as it stands);
  ``write_super`` hands the pod's kernel a coalesced super-packet it takes whole, as after GRO.

Statistics count frames and bytes as read and written, plus the segments super-packets carried.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from knemu.node_agent.dataplane import offload
from knemu.node_agent.dataplane.adapters import DEFAULT_BATCH, PacketTap, PortStatistics

log = logging.getLogger(__name__)

READ_BYTES = offload.VNET_HEADER_BYTES + 65535
SuperPacketSink = Callable[[bytes, int, float], None]  # (ip packet, gso_size or 0, now)
_PLAIN = offload.PLAIN_HEADER
_PARTIAL = offload.F_NEEDS_CSUM


@dataclass
class OffloadStatistics(PortStatistics):
    rx_super_packets: int = 0  # TCP super-packets read (each counted once in rx_packets)
    rx_segments: int = 0  # the MSS-sized segments they stood for
    tx_super_packets: int = 0
    tx_segments: int = 0
    rx_checksums_completed: int = 0


class OffloadTunPort:
    """Feeds what the pod sends to ``on_packet(packet, gso_size, now)``; see the module."""

    def __init__(
        self,
        fd: int,
        on_packet: SuperPacketSink,
        *,
        name: str = "",
        batch: int = DEFAULT_BATCH,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.fd = fd
        self.name = name or f"fd{fd}"
        self.stats = OffloadStatistics()
        self._on_packet = on_packet
        self._batch = batch
        self._loop = loop or asyncio.get_running_loop()
        self._reading = False
        self.tap: PacketTap | None = None

    def start(self) -> None:
        if not self._reading:
            self._loop.add_reader(self.fd, self._on_readable)
            self._reading = True

    def close(self) -> None:
        if self._reading:
            self._loop.remove_reader(self.fd)
            self._reading = False

    def _on_readable(self) -> None:
        now = self._loop.time()
        fd, read, tap, stats = self.fd, os.read, self.tap, self.stats
        for _ in range(self._batch):
            try:
                frame = read(fd, READ_BYTES)
            except BlockingIOError:
                break
            except OSError as exc:
                stats.rx_errors += 1  # the device went away (pod stopped)
                log.debug("%s: read failed (%s); no longer reading", self.name, exc)
                self.close()
                break
            stats.rx_packets += 1
            stats.rx_bytes += len(frame) - offload.VNET_HEADER_BYTES
            packet, gso_size = self._unwrap(frame)
            if not packet:
                continue
            if tap is not None:
                tap(packet, now, True)
            self._on_packet(packet, gso_size, now)
        stats.wakeups += 1

    def _unwrap(self, frame: bytes) -> tuple[bytes, int]:
        """(packet, gso_size) from a frame; (b"", 0) for one we cannot use (counted)."""
        if len(frame) > offload.VNET_HEADER_BYTES and not frame[0] and not frame[1]:
            # no flags, no GSO: a whole packet, checksum done (the common small case)
            return frame[offload.VNET_HEADER_BYTES :], 0
        parsed = offload.parse_vnet(frame)
        if parsed is None:
            self.stats.rx_errors += 1
            return b"", 0
        header, packet = parsed
        gso_type = header.gso_type & ~offload.GSO_ECN
        if gso_type == offload.GSO_TCPV4 and len(packet) > header.hdr_len + header.gso_size:
            self.stats.rx_super_packets += 1
            self.stats.rx_segments += -(-(len(packet) - header.hdr_len) // header.gso_size)
            return packet, header.gso_size
        if gso_type not in (offload.GSO_NONE, offload.GSO_TCPV4):
            self.stats.rx_errors += 1  # not offered by TUNSETOFFLOAD: never expected
            return b"", 0
        if header.flags & _PARTIAL:
            done = offload.complete_checksum(packet, header.csum_start, header.csum_offset)
            if done is None:
                self.stats.rx_errors += 1
                return b"", 0
            self.stats.rx_checksums_completed += 1
            packet = done
        return packet, 0

    def write(self, packet: bytes | bytearray) -> None:
        """One whole packet into the pod."""
        self._write(_PLAIN, packet)

    def write_super(self, packet: bytes | bytearray, gso_size: int) -> None:
        """A TCP super-packet of ``gso_size`` segments (from ``offload.coalesce`` or a pod on
        this node), or an ordinary packet when it is not one."""
        ihl = (packet[0] & 0x0F) << 2
        if len(packet) < ihl + 20 or packet[9] != 6 or gso_size <= 0:
            self._write(_PLAIN, packet)
            return
        buf = packet if isinstance(packet, bytearray) else bytearray(packet)
        offload.set_pseudo_sum(buf, ihl)
        hl = ihl + ((buf[ihl + 12] >> 4) << 2)
        if len(buf) <= hl + gso_size:  # one segment: complete its checksum, no GSO
            self._write(_PLAIN, offload.complete_checksum(bytes(buf), ihl, 16) or buf)
            return
        self.stats.tx_super_packets += 1
        self.stats.tx_segments += -(-(len(buf) - hl) // gso_size)
        self._write(offload.tcp4_header(buf, gso_size), buf)

    def _write(self, header: bytes, packet: bytes | bytearray) -> None:
        if self.tap is not None:
            self.tap(packet, self._loop.time(), False)
        try:
            os.writev(self.fd, (header, packet))
        except BlockingIOError:
            self.stats.tx_dropped += 1  # queue full: a NIC drops too (txqueuelen)
            return
        except OSError as exc:
            self.stats.tx_dropped += 1
            if exc.errno not in (errno.EIO, errno.EBADFD, errno.EBADF, errno.EINVAL):
                log.warning("%s: write failed: %s", self.name, exc)
            return
        self.stats.tx_packets += 1
        self.stats.tx_bytes += len(packet)
