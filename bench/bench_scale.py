"""Scale: `knemu up --nodes N` for N = 10, 50, 100 (200 with --sizes): time to Ready, agent
footprint, idle CPU, and how fast a change reaches every node's kube-proxy table.

For each size, on this machine (needs root, like `knemu up`):

* **Ready after**: `knemu up` until every node is Ready and serving its kubelet API.
* **idle CPU**: per agent (mean) and for the api-server, from /proc/PID/stat over ``--idle-s``
  seconds with nothing happening; **NodeNotReady** events over the whole run (flapping).
* **RSS / PSS per agent** (mean, from /proc/PID/smaps_rollup) once ``--pods`` pods of a
  Deployment (built-in nginx) run spread over the nodes; PSS divides shared pages among the
  processes that share them, so it is what one more agent costs.
* **propagation**: ``--services`` Services created one after the other through REST; for each,
  the time from the api-server's 201 to the moment each node's agent applied it to its table
  (the agent stamps every Service/EndpointSlice version it applies, shown in ``/table`` as
  ``applied``), p50 / p99 / max over every (service, node) pair.

References printed beside: kube-proxy applies changes at most once per ``minSyncPeriod``
(1 s by default, iptables mode: https://kubernetes.io/docs/reference/config-api/kube-proxy-config.v1alpha1/),
so a change waits up to 1 s on every node; a kind node is a container running systemd,
containerd, kubelet and kube-proxy: ~700 MB and ~10 s of start-up per node (kind's own
documentation and the README's compose benchmark).

Run:  sudo python bench/bench_scale.py [--sizes 10,50,100,200] [--no-forkserver]
The machine's load (``uptime``) is printed with the figures: they are only as quiet as it is.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from localcluster import LocalCluster

from knemu.testing import wait_until

CLK_TCK = os.sysconf("SC_CLK_TCK")
KUBE_PROXY_MIN_SYNC_S = 1.0
KIND_NODE_MB = 700


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if parts and parts[0] in ("Rss:", "Pss:"):
            values[parts[0]] = int(parts[1]) / 1024
    return values["Rss:"], values["Pss:"]


def pids(c: LocalCluster) -> dict[str, int]:
    state = json.loads((c.state_root / f"cluster-{c.name}" / "state.json").read_text())
    return {role: int(pid) for role, pid in state["pids"].items()}


def idle_cpu(c: LocalCluster, seconds: float) -> tuple[float, float]:
    """(% of a core per agent, % for the api-server) over ``seconds`` of idleness."""
    procs = pids(c)
    agents = [p for role, p in procs.items() if role.startswith("node-")]
    before = {p: cpu_s(p) for p in procs.values()}
    t0 = time.monotonic()
    time.sleep(seconds)  # the measurement window itself
    elapsed = time.monotonic() - t0
    used = {p: cpu_s(p) - before[p] for p in procs.values()}
    per_agent = sum(used[p] for p in agents) / len(agents) / elapsed * 100
    return per_agent, used[procs["apiserver"]] / elapsed * 100


def not_ready_events(c: LocalCluster) -> int:
    """How many times a node was declared NotReady (Node events, not the pods' ones)."""
    items = c.get("/api/v1/events")["items"]
    return sum(
        int(e.get("count") or 1)
        for e in items
        if e.get("reason") == "NodeNotReady" and e.get("involvedObject", {}).get("kind") == "Node"
    )


def service(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"ports": [{"port": 80, "targetPort": 8080}]}}  # fmt: skip


def propagation_ms(c: LocalCluster, count: int) -> list[float]:
    """Milliseconds from each Service's 201 to its application on each node."""
    acked: dict[str, tuple[int, float]] = {}
    for i in range(count):
        name = f"bench-{i}"
        reply = c.post("/api/v1/namespaces/default/services", service(name))
        acked[f"Service/default/{name}"] = (int(reply["metadata"]["resourceVersion"]), time.time())
        time.sleep(0.2)  # one change at a time, as a user makes them
    samples: list[float] = []
    for node in c.node_names():
        table: dict[str, Any] = {}

        def applied(node: str = node) -> bool:
            nonlocal table
            table = c.table(node).get("applied", {})
            return all(table.get(k, {}).get("rv", 0) >= rv for k, (rv, _) in acked.items())

        wait_until(applied, 60, what=f"every bench Service in {node}'s table", interval_s=0.2)
        # 0: applied before this client had read the 201
        samples += [max(0.0, table[k]["at"] - at) * 1000 for k, (_, at) in acked.items()]
    return samples


def deployment(replicas: int) -> str:
    return f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: bench}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: bench}}}}
  template:
    metadata: {{labels: {{app: bench}}}}
    spec: {{containers: [{{name: web, image: "nginx:1.16"}}]}}
"""


def ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(x.get("type") == "Ready" and x.get("status") == "True" for x in conditions)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(size: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    c = LocalCluster(root, nodes=size, up_timeout_s=max(90.0, size * 3.0))
    t0 = time.monotonic()
    try:
        c.up()
        row: dict[str, Any] = {"nodes": size, "ready_s": time.monotonic() - t0}
        time.sleep(3)  # let start-up writes settle before the idle window
        row["idle_agent_pct"], row["idle_apiserver_pct"] = idle_cpu(c, args.idle_s)
        delays = propagation_ms(c, args.services)
        row["prop_ms"] = (percentile(delays, 0.5), percentile(delays, 0.99), max(delays))
        pods = args.pods if args.pods else min(10 * size, 100)
        c.apply(deployment(pods))
        with contextlib.suppress(TimeoutError):  # a starved machine: report how many made it
            c.wait_ready(pods, selector="app=bench", timeout_s=60 + pods)
        row["pods_ready"] = len([p for p in c.pods(selector="app=bench") if ready(p)])
        agents = [p for role, p in pids(c).items() if role.startswith("node-")]
        mems = [memory_mb(p) for p in agents]
        row["pods"] = pods
        row["rss_mb"] = statistics.mean(m[0] for m in mems)
        row["pss_mb"] = statistics.mean(m[1] for m in mems)
        row["not_ready"] = not_ready_events(c)
        return row
    finally:
        c.down()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,50,100", help="node counts, comma-separated")
    parser.add_argument("--idle-s", type=float, default=20.0, help="idle CPU window")
    parser.add_argument("--services", type=int, default=20, help="Services created per size")
    parser.add_argument("--pods", type=int, default=0,
                        help="Deployment replicas (default 10 per node, at most 100)")  # fmt: skip
    parser.add_argument("--no-forkserver", action="store_true",
                        help="one interpreter per agent (ip netns exec), as before")  # fmt: skip
    args = parser.parse_args()
    if args.no_forkserver:
        os.environ["KNEMU_NO_FORKSERVER"] = "1"
    print(f"load before: {os.popen('uptime').read().strip()}")
    header = (
        "nodes | Ready after | idle CPU per agent / api-server | RSS / PSS per agent "
        "(pods per node; Ready) | propagation p50 / p99 / max | NodeNotReady"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="knemu-scale-") as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            row = measure(size, args, Path(tmp))
            rows.append(row)
            print(
                f"{row['nodes']} | {row['ready_s']:.1f} s | {row['idle_agent_pct']:.2f} % / "
                f"{row['idle_apiserver_pct']:.1f} % | {row['rss_mb']:.1f} / {row['pss_mb']:.1f} MB "
                f"({row['pods'] / size:g}; {row['pods_ready']} of {row['pods']} Ready) | "
                f"{row['prop_ms'][0]:.0f} / {row['prop_ms'][1]:.0f} / "
                f"{row['prop_ms'][2]:.0f} ms | {row['not_ready']}",
                flush=True,
            )
    print(header)
    print(
        f"reference: kube-proxy applies a change within its minSyncPeriod "
        f"({KUBE_PROXY_MIN_SYNC_S * 1000:.0f} ms) on every node; a kind node ~{KIND_NODE_MB} MB"
    )
    for row in rows:
        ratio = row["prop_ms"][1] / (KUBE_PROXY_MIN_SYNC_S * 1000)
        print(f"{row['nodes']} nodes: p99 propagation {ratio:.2f}x kube-proxy's minSyncPeriod; "
              f"agent PSS {row['pss_mb'] / KIND_NODE_MB:.3f}x a kind node")  # fmt: skip
    print(f"load after: {os.popen('uptime').read().strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
