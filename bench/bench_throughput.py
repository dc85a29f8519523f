"""Cross-node pod-to-pod throughput: knemu vs a bare asyncio TUN<->UDP forwarder vs kernel vxlan.

All three run on the same namespaces made here (two nodes on a veth, a pod namespace each) and
are measured with iperf3 in one run:

* TCP throughput (iperf3 -t SECONDS), pod on node-1 -> pod on node-2;
* small-UDP packet rate (iperf3 -u -l 64, unlimited), packets/s received.

Needs root.  Every namespace is removed at the end.  Run:  python bench/bench_throughput.py
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
UNDERLAY = ("192.168.250.1", "192.168.250.2")
POD_IPS = ("10.244.1.2", "10.244.2.2")


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True)


@contextmanager
def topology() -> Iterator[dict[str, str]]:
    tag = secrets.token_hex(2)
    ns = {k: f"kb{tag}-{k}" for k in ("n1", "n2", "p1", "p2")}
    try:
        for name in ns.values():
            sh("ip", "netns", "add", name)
            sh("ip", "-n", name, "link", "set", "lo", "up")
        sh(
            "ip",
            "link",
            "add",
            f"kb{tag}a",
            "netns",
            ns["n1"],
            "type",
            "veth",
            "peer",
            "name",
            f"kb{tag}b",
            "netns",
            ns["n2"],
        )
        for node, dev, ip in (("n1", f"kb{tag}a", UNDERLAY[0]), ("n2", f"kb{tag}b", UNDERLAY[1])):
            sh("ip", "-n", ns[node], "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns[node], "link", "set", dev, "up")
        ns["dev1"], ns["dev2"] = f"kb{tag}a", f"kb{tag}b"
        yield ns
    finally:
        for name in ("n1", "n2", "p1", "p2"):
            sh("ip", "netns", "pids", ns[name], check=False)
            sh("ip", "netns", "del", ns[name], check=False)


@contextmanager
def forwarders(ns: dict[str, str], mode: str) -> Iterator[None]:
    procs = []
    env = dict(os.environ, PYTHONPATH=str(HERE.parent / "src"))
    try:
        for i in (1, 2):
            cmd = [
                "ip",
                "netns",
                "exec",
                ns[f"n{i}"],
                sys.executable,
                str(HERE / "forwarder.py"),
                mode,
                "--index",
                str(i),
                "--local",
                UNDERLAY[i - 1],
                "--peer",
                UNDERLAY[2 - i],
                "--pod-ns",
                ns[f"p{i}"],
                "--pod-ip",
                POD_IPS[i - 1],
            ]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
            procs.append(proc)
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        for i in (1, 2):  # the TUN goes with its fd; make sure the pod namespaces are bare again
            sh("ip", "-n", ns[f"p{i}"], "link", "del", "eth0", check=False)


@contextmanager
def kernel_vxlan(ns: dict[str, str]) -> Iterator[tuple[str, str]]:
    """Kernel vxlan devices in the node namespaces (static remote, like flannel's FDB)."""
    addrs = ("10.250.0.1", "10.250.0.2")
    for i in (1, 2):
        n = ns[f"n{i}"]
        sh(
            "ip",
            "-n",
            n,
            "link",
            "add",
            "kbvx",
            "type",
            "vxlan",
            "id",
            "1",
            "local",
            UNDERLAY[i - 1],
            "remote",
            UNDERLAY[2 - i],
            "dstport",
            "4789",
            "dev",
            ns[f"dev{i}"],
        )
        sh("ip", "-n", n, "addr", "add", f"{addrs[i - 1]}/24", "dev", "kbvx")
        sh("ip", "-n", n, "link", "set", "kbvx", "mtu", "1450", "up")
    try:
        yield addrs
    finally:
        for i in (1, 2):
            sh("ip", "-n", ns[f"n{i}"], "link", "del", "kbvx", check=False)


def iperf(client_ns: str, server_ns: str, server_ip: str, args: list[str]) -> dict[str, Any]:
    server = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-J"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            probe = sh("ip", "netns", "exec", server_ns, "ss", "-ltn", "sport", "= :5201")
            if ":5201" in probe.stdout:
                break
            time.sleep(0.05)
        out = sh("ip", "netns", "exec", client_ns, "iperf3", "-c", server_ip, "-J", *args)
        report: dict[str, Any] = json.loads(out.stdout)
        return report
    finally:
        server.kill()
        server.wait()


def measure(client_ns: str, server_ns: str, server_ip: str, seconds: int) -> tuple[float, float]:
    tcp = iperf(client_ns, server_ns, server_ip, ["-t", str(seconds)])
    mbit = tcp["end"]["sum_received"]["bits_per_second"] / 1e6
    udp = iperf(
        client_ns,
        server_ns,
        server_ip,
        ["-u", "-l", "64", "-b", "0", "-t", str(max(2, seconds // 2))],
    )
    s = udp["end"]["sum"]
    pps = (s["packets"] - s["lost_packets"]) / s["seconds"]
    return mbit, pps


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=5)
    args = p.parse_args()
    results: dict[str, tuple[float, float]] = {}
    with topology() as ns:
        for mode in ("bare", "knemu"):
            with forwarders(ns, mode):
                results[mode] = measure(ns["p1"], ns["p2"], POD_IPS[1], args.seconds)
        with kernel_vxlan(ns) as addrs:
            results["kernel vxlan"] = measure(ns["n1"], ns["n2"], addrs[1], args.seconds)
    print(f"{'path':<16}{'TCP Mbit/s':>12}{'UDP-64 pkt/s':>15}")
    for name, (mbit, pps) in results.items():
        print(f"{name:<16}{mbit:>12.0f}{pps:>15.0f}")
    kn, bare = results["knemu"], results["bare"]
    print(
        f"knemu / bare forwarder: TCP {kn[0] / bare[0]:.2f}x (target >= 0.7), "
        f"UDP {kn[1] / bare[1]:.2f}x"
    )
    print(f"knemu / kernel vxlan:   TCP {kn[0] / results['kernel vxlan'][0]:.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
