"""Packets per second through the asyncio adapters, and what a capture tap costs.

    PYTHONPATH=src python bench/bench_adapters.py [--rounds R]

A pod port (``TunPort``) reads a batch of 64 small packets from a datagram fd (a Unix
``SOCK_DGRAM`` socketpair stands in for a TUN fd: one read is one datagram, as on a TUN) and
hands each to a sink that writes it to a second port, the path a packet takes from one local
pod to another; the underlay endpoint (``UnderlayEndpoint``) does the same with UDP datagrams
on loopback.  Only the adapters' own calls are timed (CPU time); filling and draining the
sockets is not.

(idle) no capture has ever run: the tap attribute is None;
(tap)  a capture runs on both ports (a ``CaptureSession`` encoding pcap records in memory);
(full) the same with a capture whose reader has stalled: its queue is full, packets are dropped;
(ref)  the same loop written inline with no tap check at all, to show the idle tap's cost.
Each figure is the best of R interleaved rounds; measuring stops 20 s after start.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import time
from collections.abc import Callable

from knemu.node_agent.dataplane.adapters import TunPort, UnderlayEndpoint
from knemu.node_agent.dataplane.capture import CaptureSession
from knemu.node_agent.kubelet.capture import CaptureTaps

BATCH = 64
WAKEUPS = 200  # per round
PACKET = bytes(20) + b"x" * 80


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for s in (a, b):
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return a, b


def _drain(sock: socket.socket) -> None:
    try:
        while True:
            sock.recv(65535)
    except BlockingIOError:
        return


def _inline_reader(fd: int, sink: Callable[[bytes, float], object]) -> Callable[[], None]:
    """The reference: TunPort's read loop without statistics or tap."""

    def readable() -> None:
        now = time.monotonic()
        for _ in range(BATCH):
            try:
                packet = os.read(fd, 65535)
            except BlockingIOError:
                return
            sink(packet, now)

    return readable


def _time_wakeups(feed: socket.socket, readable: Callable[[], None], out: socket.socket) -> float:
    spent = 0.0
    for _ in range(WAKEUPS):
        for _ in range(BATCH):
            feed.send(PACKET)
        start = time.process_time()
        readable()
        spent += time.process_time() - start
        _drain(out)
    return spent


async def measure(rounds: int, deadline: float) -> dict[str, float]:
    (feed, pod_fd), (out_fd, out_peer) = _pair(), _pair()
    out_port = TunPort(out_fd.fileno(), lambda p, n: None, name="out")
    pod = TunPort(pod_fd.fileno(), lambda p, now: out_port.write(p), name="pod")
    ref = _inline_reader(pod_fd.fileno(), lambda p, now: os.write(out_fd.fileno(), p))
    under = UnderlayEndpoint(lambda d, a, n: None)
    await under.open(("127.0.0.1", 0))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setblocking(False)
    tapped = _capture_taps(pod, out_port, under, 64 << 20)
    stalled = _capture_taps(pod, out_port, under, 0)
    cases: dict[str, Callable[[], float]] = {
        "tun idle": lambda: _time_wakeups(feed, pod._on_readable, out_peer),
        "tun ref": lambda: _time_wakeups(feed, ref, out_peer),
        "underlay idle": lambda: _underlay_round(sender, under),
        "tun tap": lambda: tapped(lambda: _time_wakeups(feed, pod._on_readable, out_peer)),
        "underlay tap": lambda: tapped(lambda: _underlay_round(sender, under)),
        "tun full": lambda: stalled(lambda: _time_wakeups(feed, pod._on_readable, out_peer)),
        "underlay full": lambda: stalled(lambda: _underlay_round(sender, under)),
    }
    best = dict.fromkeys(cases, float("inf"))
    try:
        for _ in range(rounds):
            for name, fn in cases.items():
                best[name] = min(best[name], fn())
            if time.monotonic() > deadline:
                break
    finally:
        under.close()
        for s in (feed, pod_fd, out_fd, out_peer, sender):
            s.close()
    return {name: WAKEUPS * BATCH / spent for name, spent in best.items()}


def _underlay_round(sender: socket.socket, under: UnderlayEndpoint) -> float:
    addr = under.address
    spent = 0.0
    for _ in range(WAKEUPS):
        for _ in range(BATCH):
            sender.sendto(PACKET, addr)
        start = time.process_time()
        under._on_readable()
        spent += time.process_time() - start
    return spent


def _capture_taps(
    pod: TunPort, out: TunPort, under: UnderlayEndpoint, buffer_bytes: int
) -> Callable[[Callable[[], float]], float]:
    """A runner that installs capture taps (the agent's, ``CaptureTaps``) for one round."""

    def run(fn: Callable[[], float]) -> float:
        sessions = [CaptureSession("pcap", buffer_bytes=buffer_bytes) for _ in range(3)]
        taps = CaptureTaps(lambda: under, {"pod": pod, "out": out})
        detach = [taps.attach_pod("pod", sessions[0]), taps.attach_pod("out", sessions[1]),
                  taps.attach_underlay(sessions[2])]  # fmt: skip
        try:
            return fn()
        finally:
            for d in detach:
                d()
            stats = [s.statistics() for s in sessions]
            assert sum(s.captured if buffer_bytes else s.dropped for s in stats) > 0

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    deadline = time.monotonic() + 20.0
    rates = asyncio.run(measure(min(args.rounds, 30), deadline))
    ref = rates["tun ref"]
    print(f"(ref)  pod->pod, inline loop, no tap check {ref:>12,.0f} packets/s")
    print(f"(idle) pod->pod through TunPort            {rates['tun idle']:>12,.0f} packets/s "
          f"({rates['tun idle'] / ref:.2f}x of ref)")  # fmt: skip
    print(f"(tap)  same, capturing both ports          {rates['tun tap']:>12,.0f} packets/s")
    print(f"(idle) underlay receive                    {rates['underlay idle']:>12,.0f} packets/s")
    print(f"(tap)  underlay receive, capturing         {rates['underlay tap']:>12,.0f} "
          "packets/s")  # fmt: skip
    print(f"(full) pod->pod, reader stalled            {rates['tun full']:>12,.0f} packets/s")
    print(f"(full) underlay receive, reader stalled    {rates['underlay full']:>12,.0f} "
          "packets/s")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
