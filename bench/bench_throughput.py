"""Cross-node pod-to-pod throughput: knemu vs a bare asyncio TUN<->UDP forwarder vs kernel vxlan.

Four paths, measured with iperf3 in one run, side by side:

* ``knemu cluster``: a real ``knemu up --nodes 2`` cluster (the real agent processes, everything
  they normally do switched on), iperf3 in a pod on each node;
* ``router core``: knemu's Router with the agent's TUN and underlay adapters and nothing else
  (``forwarder.py knemu``), so the agent's own overhead shows against the cluster;
* ``... +tso``: the cluster (``knemu up --tun-offload``) and the router core
  (``forwarder.py knemu-tso``) with pods' TUNs opened with TCP segmentation/receive offload;
* ``bare``: a bare asyncio TUN<->UDP forwarder, no routing (``forwarder.py bare``);
* ``kernel vxlan``: Linux vxlan devices, for scale.

The last three share namespaces made here (two nodes on a veth, a pod namespace each).  For
each: TCP one stream and four streams (iperf3 -t SECONDS [-P 4]), pod on node-1 -> pod on
node-2, and the small-UDP packet rate (iperf3 -u -l 64, unlimited), packets/s received.

Needs root.  Every namespace and the cluster are removed at the end.
Run:  python bench/bench_throughput.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import contextlib
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
CLUSTER_SUBNET = "192.168.251.0/24"  # knemu up's node network for this bench
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


Figures = tuple[float, float, float]  # TCP 1 stream Mbit/s, TCP 4 streams Mbit/s, UDP-64 pkt/s


def knemu(*args: str, env: dict[str, str], stdin: str | None = None) -> str:
    out = subprocess.run([sys.executable, "-m", "knemu.cli", *args], capture_output=True,
                         text=True, env=env, timeout=180, check=False, input=stdin)  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"knemu {' '.join(args)}: {out.stdout}{out.stderr}")
    return out.stdout


POD = """apiVersion: v1
kind: Pod
metadata: {{name: bench-{n}, labels: {{role: bench}}}}
spec:
  nodeName: node-{n}
  containers: [{{name: c, image: tools, command: [sleep, "3600"]}}]
"""


@contextmanager
def cluster(state: Path, tun_offload: bool = False) -> Iterator[tuple[str, str, str]]:
    """``knemu up --nodes 2`` and a pod on each node: (pod-1's netns, pod-2's netns, pod-2's IP)."""
    name = "kb" + secrets.token_hex(2)
    env = dict(os.environ, PYTHONPATH=str(HERE.parent / "src"),
               KNEMU_SERVER=f"http://{CLUSTER_SUBNET.rsplit('.', 1)[0]}.1:6443",
               KUBECONFIG=str(state / "kubeconfig"))  # fmt: skip
    try:
        knemu("up", "--nodes", "2", "--name", name, "--subnet", CLUSTER_SUBNET, "--state-dir",
              str(state), *(["--tun-offload"] if tun_offload else []), env=env)  # fmt: skip
        for n in (1, 2):
            knemu("apply", "-f", "-", env=env, stdin=POD.format(n=n))
        deadline = time.monotonic() + 120
        while True:
            pods = json.loads(knemu("get", "pods", "-l", "role=bench", "-o", "json", env=env))[
                "items"
            ]
            ready = [
                p
                for p in pods
                if p.get("status", {}).get("podIP")
                and any(
                    c.get("type") == "Ready" and c.get("status") == "True"
                    for c in p["status"].get("conditions", [])
                )
            ]
            if len(ready) == 2:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"bench pods not ready in 120 s: {pods}")
            time.sleep(0.5)
        by_name = {p["metadata"]["name"]: p for p in ready}
        # a pod's namespace: <prefix>-<node>-<uid without dashes, 8 digits> (the agent's rule)
        uids = [by_name[f"bench-{n}"]["metadata"]["uid"].replace("-", "") for n in (1, 2)]
        spaces = [f"knemu-{name}-node-{n}-{uids[n - 1][:8]}" for n in (1, 2)]
        yield spaces[0], spaces[1], by_name["bench-2"]["status"]["podIP"]
    finally:
        with contextlib.suppress(RuntimeError):
            knemu("down", "--name", name, "--state-dir", str(state), env=env)


def measure(client_ns: str, server_ns: str, server_ip: str, seconds: int) -> Figures:
    tcp = iperf(client_ns, server_ns, server_ip, ["-t", str(seconds)])
    mbit = tcp["end"]["sum_received"]["bits_per_second"] / 1e6
    tcp4 = iperf(client_ns, server_ns, server_ip, ["-t", str(seconds), "-P", "4"])
    mbit4 = tcp4["end"]["sum_received"]["bits_per_second"] / 1e6
    udp = iperf(
        client_ns,
        server_ns,
        server_ip,
        ["-u", "-l", "64", "-b", "0", "-t", str(max(2, seconds // 2))],
    )
    s = udp["end"]["sum"]
    pps = (s["packets"] - s["lost_packets"]) / s["seconds"]
    return mbit, mbit4, pps


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--state-dir", default="/run/knemu-bench", help="the cluster's state")
    args = p.parse_args()
    results: dict[str, Figures] = {}
    for name, offload in (("knemu cluster", False), ("cluster +tso", True)):
        with cluster(Path(args.state_dir), offload) as (pod1, pod2, ip2):
            results[name] = measure(pod1, pod2, ip2, args.seconds)
    with topology() as ns:
        cores = (("router core", "knemu"), ("core +tso", "knemu-tso"), ("bare", "bare"))
        for name, mode in cores:
            with forwarders(ns, mode):
                results[name] = measure(ns["p1"], ns["p2"], POD_IPS[1], args.seconds)
        with kernel_vxlan(ns) as addrs:
            results["kernel vxlan"] = measure(ns["n1"], ns["n2"], addrs[1], args.seconds)
    print(f"{'path':<16}{'TCP Mbit/s':>12}{'TCP x4 Mbit/s':>15}{'UDP-64 pkt/s':>15}")
    for name, (mbit, mbit4, pps) in results.items():
        print(f"{name:<16}{mbit:>12.0f}{mbit4:>15.0f}{pps:>15.0f}")
    bare = results["bare"]
    for name in ("knemu cluster", "cluster +tso", "router core", "core +tso", "kernel vxlan"):
        r = results[name]
        print(f"{name + ' / bare:':<24}TCP {r[0] / bare[0]:.2f}x  TCP x4 {r[1] / bare[1]:.2f}x  "
              f"UDP-64 {r[2] / bare[2]:.2f}x")  # fmt: skip
    kc, core = results["knemu cluster"], results["router core"]
    print(f"{'cluster / router core:':<24}TCP {kc[0] / core[0]:.2f}x  "
          f"TCP x4 {kc[1] / core[1]:.2f}x  UDP-64 {kc[2] / core[2]:.2f}x"
          "  (what the whole agent costs)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
