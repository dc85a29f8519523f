"""Benchmark `knemu dns`: queries/s and latency for a mix of A, SRV and PTR queries.

The server runs in a child process pinned to one core (os.sched_setaffinity) with a synthetic
cluster view (no api-server); the load generator runs here, on another core when there is one,
over UDP on loopback.  Two phases, both bounded in count and time:

* latency: one query outstanding at a time -> p50/p99 of the round trip;
* throughput: a window of queries outstanding -> answered queries per second.

The mix is 1000 fixed queries sent round and round, so after the warm-up the answer core's wire
cache answers them (knemu.dns.answer); ``--no-cache`` turns it off in the server to measure the
parsing path (dnspython parse, zone lookup, render) that a cache miss takes.

The reference is CoreDNS's published figure for its kubernetes plugin: 33,669 qps of internal
queries with both vCPUs of a GCE n1-standard-2 pegged, i.e. ~16.8k qps per vCPU (coredns/
deployment, kubernetes/Scaling_CoreDNS.md "CPU and QPS", measured with dnsperf).  knemu's
figure is printed beside it.

    PYTHONPATH=src python bench/bench_dns.py [--queries 20000] [--window 64] [--seconds 30]
                                             [--no-cache]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import select
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from knemu.dns.server import DnsServer

COREDNS_QPS_PER_VCPU = 16_800
ZONE = "cluster.local"
SERVICES = 200  # ClusterIP services, each with a named port
HEADLESS = 20  # headless services with 5 ready endpoints each
TIMEOUT_S = 1.0  # a query unanswered this long counts as lost


# ---- server child -------------------------------------------------------------------------


def _synthetic_view(server: DnsServer) -> None:
    from knemu.proto import knemu_pb2 as pb

    view = server.view
    rv = 0

    def meta(ns: str, name: str) -> pb.ObjectMeta:
        nonlocal rv
        rv += 1
        return pb.ObjectMeta(namespace=ns, name=name, resource_version=rv)

    for i in range(SERVICES):
        ports = [pb.ServicePort(name="http", protocol="TCP", port=80)]
        ip = f"10.96.{i // 250 + 1}.{i % 250 + 1}"
        view.apply("ADDED", "Service", pb.Service(metadata=meta("bench", f"svc{i}"),
                   type="ClusterIP", cluster_ip=ip, ports=ports))  # fmt: skip
    for i in range(HEADLESS):
        ports = [pb.ServicePort(name="http", protocol="TCP", port=8080)]
        view.apply("ADDED", "Service", pb.Service(metadata=meta("bench", f"hl{i}"),
                   cluster_ip="None", ports=ports))  # fmt: skip
        eps = [
            pb.Endpoint(addresses=[f"10.244.{i + 1}.{j + 2}"], hostname=f"p{j}",
                        conditions=pb.EndpointConditions(ready=True))
            for j in range(5)
        ]  # fmt: skip
        view.apply("ADDED", "EndpointSlice", pb.EndpointSlice(metadata=meta("bench", f"hl{i}-x"),
                   service_name=f"hl{i}", address_type="IPv4", endpoints=eps))  # fmt: skip
    server.mark_synced()


async def _serve(cpu: int, cache: bool) -> None:
    from knemu.config import DnsConfig
    from knemu.dns.server import DnsServer

    os.sched_setaffinity(0, {cpu})
    config = DnsConfig(listen="127.0.0.1:0", metrics_listen="127.0.0.1:0")
    async with DnsServer(config, watch=False) as server:
        if not cache:
            server.answerer.cache.max_entries = 0  # every query takes the parsing path
        _synthetic_view(server)
        print(server.udp_address[1], flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF


# ---- load generator -----------------------------------------------------------------------


def _queries(seed: int) -> list[bytes]:
    """A fixed mix: 60 % A (ClusterIP and headless), 25 % SRV, 15 % PTR."""
    import dns.message
    import dns.reversename

    rng = random.Random(seed)
    out: list[bytes] = []
    for _ in range(1000):
        roll, i = rng.random(), rng.randrange(SERVICES)
        if roll < 0.45:
            name, rdtype = f"svc{i}.bench.svc.{ZONE}.", "A"
        elif roll < 0.60:
            name, rdtype = f"hl{i % HEADLESS}.bench.svc.{ZONE}.", "A"
        elif roll < 0.85:
            name, rdtype = f"_http._tcp.svc{i}.bench.svc.{ZONE}.", "SRV"
        else:
            name = dns.reversename.from_address(f"10.96.{i // 250 + 1}.{i % 250 + 1}").to_text()
            rdtype = "PTR"
        out.append(dns.message.make_query(name, rdtype).to_wire())
    return out


def _run_load(
    port: int, queries: list[bytes], total: int, window: int, deadline_s: float
) -> dict[str, float]:
    """Keep ``window`` queries outstanding until ``total`` are sent or the deadline passes."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    pending: dict[int, float] = {}
    latencies: list[float] = []
    sent = errors = lost = 0
    start = time.perf_counter()
    end = start + deadline_s
    try:
        while (sent < total or pending) and time.perf_counter() < end:
            while sent < total and len(pending) < window:
                qid = sent & 0xFFFF
                wire = qid.to_bytes(2, "big") + queries[sent % len(queries)][2:]
                pending[qid] = time.perf_counter()
                sock.send(wire)
                sent += 1
            ready, _, _ = select.select([sock], [], [], 0.05)
            now = time.perf_counter()
            while ready:
                try:
                    reply = sock.recv(65535)
                except BlockingIOError:
                    break
                sent_at = pending.pop(int.from_bytes(reply[:2], "big"), None)
                if sent_at is not None:
                    latencies.append(now - sent_at)
                    errors += (reply[3] & 0x0F) not in (0, 3)  # NOERROR / NXDOMAIN are answers
            for qid, sent_at in list(pending.items()):
                if now - sent_at > TIMEOUT_S:
                    del pending[qid]
                    lost += 1
    finally:
        sock.close()
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {"answered": len(latencies), "lost": lost + len(pending), "errors": errors,
            "elapsed_s": elapsed, "qps": len(latencies) / elapsed if elapsed else 0.0,
            "p50_ms": _percentile(latencies, 0.50) * 1e3,
            "p99_ms": _percentile(latencies, 0.99) * 1e3}  # fmt: skip


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=20_000, help="throughput phase size")
    parser.add_argument("--window", type=int, default=64, help="outstanding queries")
    parser.add_argument("--seconds", type=float, default=30.0, help="time bound per phase")
    parser.add_argument("--no-cache", action="store_true", help="turn the wire cache off")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, default=0, help="core the server is pinned to")
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(args.cpu, cache=not args.no_cache))
        return 0
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu = cpus[0]
    if len(cpus) > 1:
        os.sched_setaffinity(0, set(cpus[1:]))  # keep the generator off the server's core
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parent.parent / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--cpu", str(server_cpu),
         *(["--no-cache"] if args.no_cache else [])],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        queries = _queries(seed=1)
        _run_load(port, queries, 500, 8, args.seconds)  # warm-up
        latency = _run_load(port, queries, min(args.queries, 5000), 1, args.seconds)
        load = _run_load(port, queries, args.queries, args.window, args.seconds)
    finally:
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    _report(latency, load, server_cpu, len(cpus), args.window, not args.no_cache)
    return 0 if load["answered"] and not load["errors"] else 1


def _report(latency: dict[str, float], load: dict[str, float], cpu: int, ncpu: int,
            window: int, cache: bool) -> None:  # fmt: skip
    ratio = load["qps"] / COREDNS_QPS_PER_VCPU
    print(f"knemu dns benchmark: mix 60% A / 25% SRV / 15% PTR over UDP on loopback, wire cache "
          f"{'on' if cache else 'off'}; "
          f"server pinned to cpu {cpu} (of {ncpu}); load average "
          f"{os.getloadavg()[0]:.1f} (other work on the machine skews the figures)")  # fmt: skip
    print(f"  latency, 1 outstanding : p50 {latency['p50_ms']:.3f} ms  "
          f"p99 {latency['p99_ms']:.3f} ms  ({latency['answered']:.0f} queries)")  # fmt: skip
    print(f"  load, {window} outstanding : {load['qps']:,.0f} qps  p50 {load['p50_ms']:.3f} ms  "
          f"p99 {load['p99_ms']:.3f} ms  answered {load['answered']:.0f}  "
          f"lost {load['lost']:.0f}  errors {load['errors']:.0f}")  # fmt: skip
    print(f"  {'':24}   knemu        CoreDNS (published)   ratio")
    print(f"  {'qps per vCPU':24} {load['qps']:>9,.0f}   {COREDNS_QPS_PER_VCPU:>12,}          "
          f"{ratio:.2f}x")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
