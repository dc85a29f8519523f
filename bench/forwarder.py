"""One node's forwarder for bench/bench_throughput.py (run inside the node's namespace).

Creates the pod's TUN in this (node) namespace, moves it into the pod namespace as eth0 (as the
agent does), then forwards between it and the underlay UDP socket:

* ``bare``: no routing at all: every TUN packet goes to the one peer, every datagram into the
  TUN.  The ceiling of a Python asyncio TUN<->UDP design.
* ``knemu``: the real data path: knemu's Router core with the agent's TunPort and
  UnderlayEndpoint adapters (VXLAN encapsulation, routing, conntrack lookups).
* ``knemu-tso``: the same with the pod's TUN opened with offloads, as ``knemu agent
  --tun-offload`` does (TSO super-packets from the pod routed once and cut for the underlay,
  GRO of each batch of underlay datagrams into the pod).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess

from knemu.node_agent.dataplane.adapters import TunPort, UnderlayEndpoint
from knemu.node_agent.dataplane.batching import route_underlay_batch
from knemu.node_agent.dataplane.offload import cut
from knemu.node_agent.dataplane.offload_port import OffloadTunPort
from knemu.node_agent.dataplane.router import OUT_POD, OUT_UNDERLAY, LocalNode, Output, Router
from knemu.node_agent.dataplane.tun import open_tun

BATCH = 64


def plumb_pod(tun_name: str, pod_ns: str, pod_ip: str, mtu: int) -> None:
    def run(*argv: str) -> None:
        subprocess.run(argv, check=True)

    run("ip", "link", "set", tun_name, "netns", pod_ns)
    run("ip", "-n", pod_ns, "link", "set", tun_name, "name", "eth0")
    run("ip", "-n", pod_ns, "link", "set", "eth0", "mtu", str(mtu), "up")
    run("ip", "-n", pod_ns, "addr", "add", f"{pod_ip}/32", "dev", "eth0")
    run("ip", "-n", pod_ns, "route", "add", "default", "dev", "eth0")
    run("ip", "-n", pod_ns, "link", "set", "lo", "up")


async def bare(fd: int, local: str, peer: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((local, port))
    sock.setblocking(False)
    dest = (peer, port)

    def from_tun() -> None:
        for _ in range(BATCH):
            try:
                sock.sendto(os.read(fd, 65535), dest)
            except BlockingIOError:
                return

    def from_udp() -> None:
        for _ in range(BATCH):
            try:
                os.write(fd, sock.recv(65535))
            except BlockingIOError:
                return

    loop.add_reader(fd, from_tun)
    loop.add_reader(sock.fileno(), from_udp)
    await asyncio.Event().wait()


async def knemu(fd: int, args: argparse.Namespace) -> None:
    me, other = args.index, 3 - args.index
    node = LocalNode(
        name=f"node-{me}",
        underlay_ip=args.local,
        vtep_mac=f"02:00:00:00:00:0{me}",
        pod_cidr=f"10.244.{me}.0/24",
        gateway_ip=f"10.244.{me}.1",
    )
    router = Router(node)
    router.set_peer(f"node-{other}", f"10.244.{other}.0/24", args.peer, f"02:00:00:00:00:0{other}")
    router.add_local_pod(args.pod_ip, 1)
    underlay: UnderlayEndpoint
    port: TunPort

    def dispatch(out: Output | None) -> None:
        if out is None:
            return
        kind, target, data = out
        if kind == OUT_POD:
            port.write(data)
        elif kind == OUT_UNDERLAY:
            underlay.send(data, target)

    port = TunPort(fd, lambda pkt, now: dispatch(router.handle_pod(1, pkt, now)))
    underlay = UnderlayEndpoint(lambda d, a, now: dispatch(router.handle_underlay(d, a, now)))
    await underlay.open((args.local, args.port))
    port.start()
    await asyncio.Event().wait()


async def knemu_tso(fd: int, args: argparse.Namespace) -> None:
    """``knemu`` with the pod TUN opened with offloads (``knemu agent --tun-offload``)."""
    me, other = args.index, 3 - args.index
    node = LocalNode(
        name=f"node-{me}",
        underlay_ip=args.local,
        vtep_mac=f"02:00:00:00:00:0{me}",
        pod_cidr=f"10.244.{me}.0/24",
        gateway_ip=f"10.244.{me}.1",
    )
    router = Router(node)
    router.set_peer(f"node-{other}", f"10.244.{other}.0/24", args.peer, f"02:00:00:00:00:0{other}")
    router.add_local_pod(args.pod_ip, 1)
    underlay: UnderlayEndpoint
    port: OffloadTunPort
    headroom = router.headroom_bytes

    def dispatch(out: Output | None, gso_size: int) -> None:
        if out is None:
            return
        kind, target, data = out
        if kind == OUT_POD and gso_size:
            port.write_super(data, gso_size)
        elif kind == OUT_POD:
            port.write(data)
        elif kind == OUT_UNDERLAY:
            for frame in cut(data, headroom, gso_size) if gso_size else (data,):
                underlay.send(frame, target)

    def from_underlay(batch: list[tuple[bytes, tuple[str, int]]], now: float) -> None:
        for out, gso_size in route_underlay_batch(router, batch, now):
            dispatch(out, gso_size)

    port = OffloadTunPort(
        fd, lambda pkt, gso, now: dispatch(router.handle_pod(1, pkt, now, gso), gso)
    )
    underlay = UnderlayEndpoint(
        lambda d, a, now: dispatch(router.handle_underlay(d, a, now), 0), on_batch=from_underlay
    )
    await underlay.open((args.local, args.port))
    port.start()
    await asyncio.Event().wait()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("bare", "knemu", "knemu-tso"))
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--local", required=True)
    p.add_argument("--peer", required=True)
    p.add_argument("--pod-ns", required=True)
    p.add_argument("--pod-ip", required=True)
    p.add_argument("--port", type=int, default=4789)
    p.add_argument("--mtu", type=int, default=1450)
    args = p.parse_args()
    fd = open_tun("kbpod0", offload=args.mode == "knemu-tso")
    plumb_pod("kbpod0", args.pod_ns, args.pod_ip, args.mtu)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print("ready", flush=True)
    if args.mode == "bare":
        asyncio.run(bare(fd, args.local, args.peer, args.port))
    elif args.mode == "knemu":
        asyncio.run(knemu(fd, args))
    else:
        asyncio.run(knemu_tso(fd, args))


if __name__ == "__main__":
    main()
