"""Thin asyncio adapters, one per file descriptor, between the kernel and the router core.

Following aioquic's ``asyncio/protocol.py``: an adapter reads from its fd, hands each packet to
the sans-I/O core with the current time, and sends what it is told to send; it makes no
routing decision of its own.

* ``TunPort`` owns the reading side of a TUN fd (a pod's eth0 or the node's ``knemu0``).  A
  TUN fd is a datagram fd: one ``read`` is one IP packet, one ``write`` sends one
  (Documentation/networking/tuntap.rst).  Each wakeup drains up to ``batch`` packets so a busy
  port costs one epoll round per batch rather than per packet.
* ``UnderlayEndpoint`` is the node's VTEP socket, UDP on underlay-IP:4789 (RFC 7348 section 5),
  read the same way (asyncio's datagram transport reads one datagram per wakeup, too few for a
  TCP window arriving in a burst), with enlarged socket buffers.
  Faults are applied here, on the way out and on the way in (``knemu.node_agent.dataplane.faults``):
  the injector says, per datagram, which copies to deliver and when; delayed copies are
  scheduled with ``loop.call_at`` so nothing ever sleeps.

Both carry a ``tap`` for ``knemu capture`` (``knemu.node_agent.dataplane.capture``): None
while nobody captures, so an idle tap costs one test per packet; a capture sets it to a
function that must not block.  Underlay taps see datagrams as on the wire: received ones
before impairments apply, sent ones after.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import logging
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

READ_BYTES = 65535  # largest IPv4 packet
DEFAULT_BATCH = 64
UNDERLAY_BUFFER_BYTES = 8 << 20
SO_RCVBUFFORCE, SO_SNDBUFFORCE = 33, 32  # linux/asm-generic/socket.h
SO_ATTACH_FILTER = 26  # linux/asm-generic/socket.h
IP_MTU_DISCOVER = 10  # linux/in.h, with its values below
IP_PMTUDISC_DONT, IP_PMTUDISC_PROBE = 0, 3  # DF clear; DF set, the path MTU cache ignored
_UDP_HEADER = struct.Struct("!HHHH")  # RFC 768

PacketSink = Callable[[bytes, float], None]  # (ip packet, now)
DatagramSink = Callable[[bytes, tuple[str, int], float], None]  # (payload, source, now)
BatchSink = Callable[[list[tuple[bytes, tuple[str, int]]], float], None]  # a wakeup's datagrams
PacketTap = Callable[[bytes | bytearray, float, bool], None]  # (ip packet, now, outbound)
# (udp payload, source, destination, now, outbound)
DatagramTap = Callable[[bytes | bytearray, tuple[str, int], tuple[str, int], float, bool], None]


@dataclass
class PortStatistics:
    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    tx_dropped: int = 0  # the kernel queue was full (EAGAIN) or the device went away
    rx_errors: int = 0
    wakeups: int = 0


class TunPort:
    """Feeds packets read from ``fd`` to ``on_packet``; ``write`` sends one packet into it.

    The fd must be non-blocking.  ``close`` stops reading but leaves the fd open: whoever
    created the device (the pod runtime, the host interface) closes it.
    """

    def __init__(
        self,
        fd: int,
        on_packet: PacketSink,
        *,
        name: str = "",
        batch: int = DEFAULT_BATCH,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.fd = fd
        self.name = name or f"fd{fd}"
        self.stats = PortStatistics()
        self._on_packet = on_packet
        self._batch = batch
        self._loop = loop or asyncio.get_running_loop()
        self._reading = False
        self.tap: PacketTap | None = None  # packets the device sent (outbound) and was given

    def start(self) -> None:
        if not self._reading:
            self._loop.add_reader(self.fd, self._on_readable)
            self._reading = True

    def close(self) -> None:
        if self._reading:
            self._loop.remove_reader(self.fd)
            self._reading = False

    def _on_readable(self) -> None:
        # Hot path: one clock read and one statistics update per wakeup, not per packet.
        now = self._loop.time()
        fd, on_packet, read, tap = self.fd, self._on_packet, os.read, self.tap
        packets = nbytes = 0
        try:
            for _ in range(self._batch):
                try:
                    packet = read(fd, READ_BYTES)
                except BlockingIOError:
                    return
                except OSError as exc:
                    # EBADFD/EIO: the device was deleted under us (pod stopped); stop reading.
                    self.stats.rx_errors += 1
                    log.debug("%s: read failed (%s); no longer reading", self.name, exc)
                    self.close()
                    return
                if packet:
                    packets += 1
                    nbytes += len(packet)
                    if tap is not None:
                        tap(packet, now, True)
                    on_packet(packet, now)
        finally:
            stats = self.stats
            stats.wakeups += 1
            stats.rx_packets += packets
            stats.rx_bytes += nbytes

    def write(self, packet: bytes | bytearray) -> None:
        if self.tap is not None:
            self.tap(packet, self._loop.time(), False)
        try:
            os.write(self.fd, packet)
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


class Impairment(Protocol):
    """The fault injector as the underlay sees it (``dataplane.faults.Impairments``).

    ``apply`` returns (time, payload) for each copy to deliver: ``[]`` drops the datagram, one
    entry at ``now`` passes it, two duplicate it; payloads may come back corrupted.
    """

    def __bool__(self) -> bool: ...

    def apply(
        self, datagram: bytes, peer: str, direction: str, now: float
    ) -> list[tuple[float, bytes]]: ...


SEND = "egress"
RECEIVE = "ingress"


class UnderlayEndpoint:
    """UDP socket on the node's underlay IP and VXLAN port; faults applied both ways.

    ``peer_of`` names the peer node of an underlay IP (impairments are per peer node); when
    no impairment is installed the datagram takes the direct path -- with ``on_batch``, all
    the datagrams of one wakeup in one call (for receive offload, ``dataplane.batching``).
    """

    def __init__(
        self,
        on_datagram: DatagramSink,
        impairments: Impairment | None = None,
        peer_of: Callable[[str], str] = str,
        batch: int = DEFAULT_BATCH,
        on_batch: BatchSink | None = None,
    ) -> None:
        self._sink = on_datagram
        self._on_batch = on_batch
        self.impairments = impairments
        self._peer_of = peer_of
        self._batch = batch
        self.stats = PortStatistics()
        self._sock: socket.socket | None = None
        self._loop = asyncio.get_running_loop()
        self._timers: set[asyncio.TimerHandle] = set()
        self._local: tuple[str, int] = ("0.0.0.0", 0)
        self.tap: DatagramTap | None = None
        # None until open(); then 0 for UDP, or the IP protocol of a raw socket (IP-in-IP: 4),
        # whose reads are whole IPv4 packets and whose sends the kernel wraps in one.
        self.ip_protocol: int | None = None
        # Set by ``send_from_ports``: a raw UDP socket that sends with a source port per
        # datagram (RFC 7348's per-flow port), and the function choosing that port.
        self._raw_udp: socket.socket | None = None
        self._source_port: Callable[[bytes | bytearray], int] | None = None

    async def open(self, local_addr: tuple[str, int], ip_protocol: int = 0) -> None:
        """UDP on ``local_addr``; with ``ip_protocol`` a raw IPv4 socket for that protocol
        instead (IP-in-IP: 4), bound to the address only: the kernel writes the outer IPv4
        header on send, and each read is a whole received IPv4 packet (raw(7))."""
        if ip_protocol:
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, ip_protocol)
            local_addr = (local_addr[0], 0)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            _grow_buffers(sock)
            sock.bind(local_addr)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._local = self.address
        self.ip_protocol = ip_protocol
        self._loop.add_reader(sock.fileno(), self._on_readable)

    def set_dont_fragment(self, df: bool) -> None:
        """Outer DF on what this endpoint sends: clear (Linux vxlan's default, ``df unset``) or
        set without consulting the path MTU cache (the router keeps packets within the MTU)."""
        mode = IP_PMTUDISC_PROBE if df else IP_PMTUDISC_DONT
        for sock in (self._sock, self._raw_udp):
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, mode)

    def send_from_ports(self, source_port: Callable[[bytes | bytearray], int]) -> None:
        """Send each UDP datagram from the port ``source_port`` picks for its payload.

        A UDP socket has one source port, so sending goes through a raw IPPROTO_UDP socket that
        writes the UDP header itself (checksum 0, as RFC 7348 section 5 says a VTEP SHOULD
        send over IPv4, and as Linux vxlan does by default); the kernel adds the IPv4 header.
        A raw socket also gets a copy of every UDP datagram the namespace receives: a socket
        filter that accepts nothing drops those at once.  Receiving stays on the UDP socket.
        """
        if self._sock is None or self.ip_protocol:
            raise RuntimeError("UnderlayEndpoint.send_from_ports: open() a UDP endpoint first")
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
        try:
            _drop_everything_received(sock)
            sock.setblocking(False)
            _grow_buffers(sock)
            sock.setsockopt(
                socket.IPPROTO_IP,
                IP_MTU_DISCOVER,
                self._sock.getsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER),
            )
            sock.bind((self._local[0], 0))
        except OSError:
            sock.close()
            raise
        self._raw_udp, self._source_port = sock, source_port

    @property
    def address(self) -> tuple[str, int]:
        if self._sock is None:
            raise RuntimeError("UnderlayEndpoint.address: call open() first")
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def _on_readable(self) -> None:
        assert self._sock is not None
        # Hot path: one clock read, one impairment check and one statistics update per wakeup.
        now = self._loop.time()
        recvfrom, sink, tap, local = self._sock.recvfrom, self._sink, self.tap, self._local
        impaired = bool(self.impairments)
        batch: list[tuple[bytes, tuple[str, int]]] | None = (
            [] if self._on_batch is not None and not impaired else None
        )
        packets = nbytes = 0
        try:
            for _ in range(self._batch):
                try:
                    data, addr = recvfrom(READ_BYTES)
                except BlockingIOError:
                    break
                except OSError:
                    self.stats.rx_errors += 1  # e.g. an ICMP error queued on the socket
                    continue
                packets += 1
                nbytes += len(data)
                if tap is not None:
                    tap(data, addr, local, now, False)
                if batch is not None:
                    batch.append((data, addr))
                elif impaired:
                    self._impaired_receive(data, addr, now)
                else:
                    sink(data, addr, now)
        finally:
            stats = self.stats
            stats.wakeups += 1
            stats.rx_packets += packets
            stats.rx_bytes += nbytes
        if batch and self._on_batch is not None:
            self._on_batch(batch, now)

    def on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        """One datagram as if read from the socket (tests, and anything not batched)."""
        now = self._loop.time()
        self.stats.rx_packets += 1
        self.stats.rx_bytes += len(data)
        if self.tap is not None:
            self.tap(data, addr, self._local, now, False)
        if self.impairments:
            self._impaired_receive(data, addr, now)
        else:
            self._sink(data, addr, now)

    def _impaired_receive(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        assert self.impairments is not None
        for when, copy in self.impairments.apply(data, self._peer_of(addr[0]), RECEIVE, now):
            self._at(when, now, functools.partial(self._deliver, copy, addr))

    def send(self, data: bytes | bytearray, addr: tuple[str, int]) -> None:
        if not self.impairments:
            self._sendto(data, addr)
            return
        now = self._loop.time()
        # bytes(): the router may reuse its output buffer, and a copy can be sent later.
        frozen = bytes(data)
        for when, copy in self.impairments.apply(frozen, self._peer_of(addr[0]), SEND, now):
            self._at(when, now, functools.partial(self._sendto, copy, addr))

    def _deliver(self, data: bytes, addr: tuple[str, int]) -> None:
        self._sink(data, addr, self._loop.time())

    def _at(self, when: float, now: float, deliver: Callable[[], None]) -> None:
        if when <= now:
            deliver()
            return

        def fire() -> None:
            self._timers.discard(handle)
            deliver()

        handle = self._loop.call_at(when, fire)
        self._timers.add(handle)

    def _sendto(self, data: bytes | bytearray, addr: tuple[str, int]) -> None:
        if self._sock is None:
            self.stats.tx_dropped += 1
            return
        local = self._local
        try:
            if self._raw_udp is None:
                self._sock.sendto(data, addr)
            else:
                assert self._source_port is not None
                sport = self._source_port(data)
                header = _UDP_HEADER.pack(sport, addr[1], 8 + len(data), 0)
                self._raw_udp.sendmsg((header, data), (), 0, (addr[0], 0))
                local = (local[0], sport)
        except OSError:
            self.stats.tx_dropped += 1  # full send buffer or unreachable peer: a lost datagram
            return
        self.stats.tx_packets += 1
        self.stats.tx_bytes += len(data)
        if self.tap is not None:
            self.tap(data, local, addr, self._loop.time(), True)

    def close(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._raw_udp is not None:
            self._raw_udp.close()
            self._raw_udp = None


def _grow_buffers(sock: socket.socket) -> None:
    """Bursts of a TCP window arrive faster than one loop iteration drains them: give the
    socket room (the *FORCE options pass net.core.rmem_max for CAP_NET_ADMIN)."""
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, UNDERLAY_BUFFER_BYTES)
        except OSError:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, plain, UNDERLAY_BUFFER_BYTES)


def _drop_everything_received(sock: socket.socket) -> None:
    """Attach a classic BPF program of one instruction, ``ret #0`` (accept no bytes), so the
    kernel discards every packet queued to ``sock`` (socket(7) SO_ATTACH_FILTER)."""
    program = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0))  # BPF_RET|BPF_K
    fprog = struct.pack("HP", 1, ctypes.addressof(program))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
