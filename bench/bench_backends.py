"""The pod network backends side by side (seeds 000/001: "BGP is faster, overlays cost CPU and
header bytes"), each on a real 2-node `knemu up` cluster, in one run:

* TCP throughput, pod on node-1 -> pod on node-2 (iperf3 -t SECONDS);
* 64-byte UDP datagrams received per second (iperf3 -u -l 64 -b 0);
* bytes on the wire per payload byte: Ethernet bytes through node-1's underlay interface, both
  directions (ACKs included), during the TCP run, over the bytes iperf3 delivered;
* router CPU per packet, pod -> underlay -> pod (two sans-I/O routers, no sockets): what the
  backend's encapsulation (and, with WireGuard, the sealing) costs in the agent itself.

Backends: vxlan, ipip, bgp, and vxlan with ``--encryption wireguard``.  Needs root (network
namespaces), iperf3 and, for bgp, BIRD 2.  Every cluster is taken down again; all traffic stays
in its namespaces.  Run:  python bench/bench_backends.py [--seconds 5] [--only vxlan,bgp]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from knemu.node_agent.dataplane import backends
from knemu.node_agent.dataplane.backends.ipip import encode_ipip
from knemu.node_agent.dataplane.router import LocalNode, Router
from knemu.proto import wire

REPO = Path(__file__).resolve().parents[1]
SETUPS = {  # name: (backend, encryption)
    "vxlan": ("vxlan", "none"),
    "ipip": ("ipip", "none"),
    "bgp": ("bgp", "none"),
    "vxlan+wireguard": ("vxlan", "wireguard"),
}
POD = """apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{role: bench}}}}
spec:
  nodeName: {node}
  containers: [{{name: tools, image: tools, command: [sleep, "3600"]}}]
"""


def free_subnet() -> str:
    """A /24 under 192.168.0.0/16 that no route of this machine touches."""
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"],
                            capture_output=True, text=True, check=False).stdout  # fmt: skip
    used = []
    for line in routes.splitlines():
        word = line.split()[0] if line.split() else ""
        if word.startswith("192.168."):
            used.append(ipaddress.ip_network(word, strict=False))
    for _ in range(200):
        net = ipaddress.ip_network(f"192.168.{100 + secrets.randbelow(150)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return str(net)
    raise SystemExit("no free 192.168.x.0/24 for the bench clusters")


class Cluster:
    def __init__(self, backend: str, encryption: str, state: Path) -> None:
        self.name = "kb" + secrets.token_hex(3)
        self.subnet = free_subnet()
        self.state = state
        self.backend, self.encryption = backend, encryption
        self.env = dict(os.environ, PYTHONPATH=str(REPO / "src"),
                        KUBECONFIG=str(state / "kubeconfig"))  # fmt: skip

    def knemu(self, *args: str, timeout_s: float = 120, stdin: str | None = None) -> str:
        out = subprocess.run([sys.executable, "-m", "knemu.cli", *args], capture_output=True,
                             text=True, env=self.env, timeout=timeout_s, check=False,
                             input=stdin)  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"knemu {' '.join(args)}: {out.stdout}{out.stderr}")
        return out.stdout

    def node_ns(self, n: int) -> str:
        return f"knemu-{self.name}-node-{n}"

    def exec_json(self, pod: str, *argv: str, timeout_s: float = 60) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.knemu("exec", pod, "--", *argv,
                                                       timeout_s=timeout_s))  # fmt: skip
        return result


@contextmanager
def cluster(backend: str, encryption: str) -> Iterator[Cluster]:
    with tempfile.TemporaryDirectory(prefix="knemu-bench-") as tmp:
        c = Cluster(backend, encryption, Path(tmp))
        try:
            out = c.knemu("up", "--nodes", "2", "--name", c.name, "--subnet", c.subnet,
                          "--state-dir", tmp, "--backend", backend, "--encryption", encryption,
                          "--kubeconfig", str(c.state / "kubeconfig"), timeout_s=180)  # fmt: skip
            for line in out.splitlines():
                if line.startswith("export KNEMU_SERVER="):
                    c.env["KNEMU_SERVER"] = line.split("=", 1)[1]
            for i in (1, 2):
                c.knemu("apply", "-f", "-", stdin=POD.format(name=f"bench-{i}", node=f"node-{i}"))
            wait_pods_ready(c)
            yield c
        finally:
            subprocess.run([sys.executable, "-m", "knemu.cli", "down", "--name", c.name,
                            "--state-dir", tmp], env=c.env, capture_output=True,
                           timeout=120, check=False)  # fmt: skip


def wait_pods_ready(c: Cluster, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        pods = json.loads(c.knemu("get", "pods", "-l", "role=bench", "-o", "json"))["items"]
        ready = [p for p in pods for cond in p.get("status", {}).get("conditions", [])
                 if cond.get("type") == "Ready" and cond.get("status") == "True"]  # fmt: skip
        if len(ready) == 2:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench pods not Ready after {timeout_s} s")
        time.sleep(0.5)


def wire_bytes(c: Cluster) -> int:
    out = subprocess.run(["ip", "-n", c.node_ns(1), "-j", "-s", "link", "show", "eth0"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    stats = json.loads(out)[0]["stats64"]
    return int(stats["rx"]["bytes"]) + int(stats["tx"]["bytes"])


def iperf(c: Cluster, seconds: int, *client: str) -> dict[str, Any]:
    server_ip = json.loads(c.knemu("get", "pod", "bench-2", "-o", "json"))["status"]["podIP"]
    server = subprocess.Popen([sys.executable, "-m", "knemu.cli", "exec", "bench-2", "--",
                               "iperf3", "-s", "-1"], env=c.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:  # the server needs a moment to listen: retry the connect, bounded
            try:
                result = c.exec_json("bench-1", "iperf3", "-c", server_ip, "-t", str(seconds),
                                     "-J", *client, timeout_s=seconds + 60)  # fmt: skip
            except RuntimeError as exc:
                result = {"error": str(exc)}
            if "unable to connect" not in str(result.get("error", "")):
                return result
            if time.monotonic() > deadline:
                raise RuntimeError(f"iperf3: {result['error']}")
            time.sleep(0.5)
    finally:
        server.kill()
        server.wait(10)


def measure(c: Cluster, seconds: int) -> dict[str, float]:
    before = wire_bytes(c)
    tcp = iperf(c, seconds)
    on_wire = wire_bytes(c) - before
    if "error" in tcp or "sum_received" not in tcp.get("end", {}):
        raise RuntimeError(f"iperf3 TCP run failed: {tcp.get('error', tcp.get('end'))}")
    received = tcp["end"]["sum_received"]
    udp = iperf(c, seconds, "-u", "-l", "64", "-b", "0")
    if "error" in udp or "sum_received" not in udp.get("end", {}):
        raise RuntimeError(f"iperf3 UDP run failed: {udp.get('error', udp.get('end'))}")
    got = udp["end"]["sum_received"]  # the receiver's side: datagrams that arrived
    return {
        "tcp_mbit_s": received["bits_per_second"] / 1e6,
        "udp64_pps": got["bytes"] / 64 / got["seconds"],
        "wire_per_payload": on_wire / max(received["bytes"], 1),
    }


def router_us_per_packet(backend: str, encryption: str, packets: int = 20000) -> float:
    """CPU µs for one 1400-byte pod packet through node-1's router, the underlay (a Python
    call, no socket) and node-2's router; best of 3."""
    nodes = []
    keys = (backends.KeyPair(), backends.KeyPair()) if encryption == "wireguard" else (None, None)
    for i in (1, 2):
        local = LocalNode(f"node-{i}", f"192.168.59.{10 + i}", f"02:00:00:00:00:0{i}",
                          f"10.244.{i}.0/24", f"10.244.{i}.1", backend=backend,
                          encryption=encryption, mtu=1500)  # fmt: skip
        nodes.append(Router(local, keys=keys[i - 1]))
    r1, r2 = nodes
    for me, other, i in ((r1, r2, 2), (r2, r1, 1)):
        pair = keys[i - 1]
        key = pair.public_b64 if pair is not None else ""
        me.set_peer(other.node.name, other.node.pod_cidr, other.node.underlay_ip,
                    other.node.vtep_mac, public_key=key)  # fmt: skip
    r1.add_local_pod("10.244.1.5", "a")
    r2.add_local_pod("10.244.2.7", "b")
    pkt = wire.udp_packet("10.244.1.5", "10.244.2.7", 5000, 5001, bytes(1400 - 28))
    src = (r1.node.underlay_ip, 4789)
    inner = bytes(pkt[:8]) + bytes([pkt[8] - 1]) + pkt[9:]  # as node-1 forwards it (TTL - 1)
    outer = encode_ipip(src[0], r2.node.underlay_ip, inner)[:20]  # the same for every packet
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for _ in range(packets):
            out = r1.handle_pod("a", pkt, 0.0)
            assert out is not None
            if backend == "bgp":  # the kernels route it between the host TUNs
                r2.handle_host(out[2], 0.0)
            elif backend == "ipip":  # the kernel writes the outer header: not the router's cost
                r2.handle_underlay(outer + out[2], src, 0.0)
            else:
                r2.handle_underlay(out[2], src, 0.0)
        best = min(best, (time.process_time() - start) / packets * 1e6)
    assert r2.statistics()["delivered"] == 3 * packets, r2.statistics()
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="per iperf3 run (1..30)")
    parser.add_argument("--only", default=",".join(SETUPS), help="comma-separated setups")
    args = parser.parse_args(argv)
    seconds = min(max(args.seconds, 1), 30)
    chosen = [s for s in args.only.split(",") if s]
    if unknown := [s for s in chosen if s not in SETUPS]:
        parser.error(f"unknown setup(s) {unknown}; choose from {', '.join(SETUPS)}")
    if os.geteuid() != 0 or shutil.which("iperf3") is None:
        raise SystemExit("needs root (network namespaces) and iperf3")
    rows: dict[str, dict[str, float]] = {}
    for name in chosen:
        backend, encryption = SETUPS[name]
        if backend == "bgp" and shutil.which("bird") is None:
            print(f"{name}: skipped (BIRD 2 not installed)")
            continue
        try:
            with cluster(backend, encryption) as c:
                rows[name] = measure(c, seconds)
        except RuntimeError as exc:
            print(f"{name}: failed: {exc}", file=sys.stderr)
            continue
        rows[name]["router_us"] = router_us_per_packet(backend, encryption)
        print(f"{name}: done", file=sys.stderr)
    ref = rows.get("vxlan")
    print(f"{'backend':<18}{'TCP Mbit/s':>12}{'UDP64 pps':>12}{'wire/payload':>14}"
          f"{'router us/pkt':>15}   vs vxlan (TCP, pps)")  # fmt: skip
    for name, r in rows.items():
        ratio = ""
        if ref is not None:
            ratio = f"   {r['tcp_mbit_s'] / ref['tcp_mbit_s']:.2f}x, " \
                    f"{r['udp64_pps'] / ref['udp64_pps']:.2f}x"  # fmt: skip
        print(f"{name:<18}{r['tcp_mbit_s']:>12.1f}{r['udp64_pps']:>12.0f}"
              f"{r['wire_per_payload']:>14.3f}{r['router_us']:>15.2f}{ratio}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
