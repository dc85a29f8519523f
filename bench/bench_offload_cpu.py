"""CPU seconds per GB moved pod -> pod (and back, iperf3 -R) by each forwarder, with and without
TCP offloads, TCP one stream with a fixed byte count, so the figure depends less on how loaded
the machine is than a throughput does.

Same namespaces as ``bench_throughput.py`` (two nodes on a veth, a pod namespace each); for each
mode of ``forwarder.py`` (``knemu``, ``knemu-tso``, ``bare``, alternated), the CPU time the
forwarder processes used (utime+stime from /proc, children included) and iperf3's own estimate
of the two iperf3 processes' CPU (which includes the pods' kernels' TCP work), per GB received.

Needs root.  Every namespace is removed at the end.
Run:  python bench/bench_offload_cpu.py [--bytes 300M] [--modes knemu,knemu-tso,bare]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time

from bench_throughput import POD_IPS, forwarders, sh, topology


def cpu_seconds(pids: list[str]) -> float:
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


def run(ns: dict[str, str], count: str, reverse: bool) -> tuple[float, float, float]:
    """(Mbit/s, forwarder cpu-s/GB, iperf3 cpu-s/GB) for one bounded transfer."""
    pids = [p for k in ("n1", "n2") for p in sh("ip", "netns", "pids", ns[k]).stdout.split()]
    server = subprocess.Popen(["ip", "netns", "exec", ns["p2"], "iperf3", "-s", "-1", "-J"],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 5
        while ":5201" not in sh("ip", "netns", "exec", ns["p2"], "ss", "-ltn").stdout:
            if time.monotonic() > deadline:
                raise RuntimeError("iperf3 server did not start")
            time.sleep(0.05)
        before, start = cpu_seconds(pids), time.monotonic()
        client = sh("ip", "netns", "exec", ns["p1"], "iperf3", "-c", POD_IPS[1], "-n", count,
                    "-J", *(["-R"] if reverse else []))  # fmt: skip
        wall, used = time.monotonic() - start, cpu_seconds(pids) - before
    finally:
        server.kill()
        server.wait()
    end = json.loads(client.stdout)["end"]
    gb = end["sum_received"]["bytes"] / 1e9
    cpu = end["cpu_utilization_percent"]
    iperf_cpu = (cpu["host_total"] + cpu["remote_total"]) / 100 * wall
    return end["sum_received"]["bits_per_second"] / 1e6, used / gb, iperf_cpu / gb


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bytes", default="300M", help="iperf3 -n per transfer")
    p.add_argument("--modes", default="knemu,knemu-tso,bare,knemu-tso,knemu")
    args = p.parse_args()
    print(f"{'mode':<10}{'dir':<5}{'Mbit/s':>8}{'forwarders cpu-s/GB':>22}{'iperf3 cpu-s/GB':>18}")
    with topology() as ns:
        for mode in args.modes.split(","):
            with forwarders(ns, mode):
                for reverse in (False, True):
                    mbit, fwd, ipf = run(ns, args.bytes, reverse)
                    print(f"{mode:<10}{'rev' if reverse else 'fwd':<5}{mbit:>8.0f}{fwd:>22.2f}"
                          f"{ipf:>18.2f}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
