"""Pod start latency and node memory: a real image (runc) beside a built-in workload.

On a 1-node local cluster (`knemu up`, needs root, runc, skopeo, umoci, busybox-static):

* apply -> Ready: a Pod is applied through the CLI and polled until its Ready condition is
  True, one pod at a time (median and max of ``--pods`` runs), for the test image
  ``knemu.test/web:v1`` (busybox httpd under runc) and for ``nginx`` (the built-in Python
  workload that stands in for it).  References: the kubelet's pod startup SLO is 5 s p99
  for stateless pods with pulled images (kubernetes/community sig-scalability
  slos/pod_startup_latency.md); a container start with containerd is ~0.3-0.5 s.
* node memory per running container: ``--pods`` pods of each kind kept running, and the
  resident memory (RSS) of every process the node agent started for them (pause, runc, the
  container's own processes) divided by their number.

Run:  sudo python bench/bench_pod_start.py [--pods 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from localcluster import LocalCluster, local_cluster

from knemu.testing import wait_until
from knemu.testing_images import WEB_REF, build_test_images

KINDS = {"real image (runc)": WEB_REF, "built-in (nginx)": "nginx:1.16"}


def pod(name: str, image: str) -> str:
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{bench: "{name.rsplit("-", 1)[0]}"}}}}
spec:
  containers:
  - {{name: c, image: "{image}", imagePullPolicy: IfNotPresent,
      ports: [{{containerPort: 8080}}]}}
"""


def ready(c: LocalCluster, name: str) -> bool:
    status = c.get(f"/api/v1/namespaces/default/pods/{name}").get("status", {})
    return any(x.get("type") == "Ready" and x.get("status") == "True"
               for x in status.get("conditions", []))  # fmt: skip


def start_latency_s(c: LocalCluster, name: str, image: str) -> float:
    t0 = time.monotonic()
    c.apply(pod(name, image))
    wait_until(lambda: ready(c, name), 120, what=f"pod {name} Ready", interval_s=0.02)
    return time.monotonic() - t0


def descendants_rss_kb(root: int) -> int:
    """RSS of every process under ``root`` (the node agent), from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            status = (entry / "status").read_text()
        except OSError:
            continue
        children.setdefault(int(stat[1]), []).append(int(entry.name))
        rss[int(entry.name)] = next((int(line.split()[1]) for line in status.splitlines()
                                     if line.startswith("VmRSS:")), 0)  # fmt: skip
    total, todo = 0, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


def agent_pid(c: LocalCluster) -> int:
    state = json.loads((c.state_root / f"cluster-{c.name}" / "state.json").read_text())
    return int(state["pids"]["node-1"])


def delete_all(c: LocalCluster, selector: str) -> None:
    c.knemu("delete", "pod", "-l", selector, timeout_s=120)
    wait_until(lambda: not c.pods(selector=selector), 120, what=f"pods {selector} gone")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, local_cluster(Path(tmp), nodes=1) as c:
        archives = build_test_images(Path(tmp) / "images")
        c.knemu("image", "--cluster", c.name, "--state-dir", tmp, "load",
                "-i", str(archives[WEB_REF]))  # fmt: skip
        print(f"{'kind':<20} {'apply->Ready median':>20} {'max':>8} {'node RSS/container':>20}")
        for n, (kind, image) in enumerate(KINDS.items()):
            before = descendants_rss_kb(agent_pid(c))
            times = [start_latency_s(c, f"b{n}-{i}", image) for i in range(args.pods)]
            after = descendants_rss_kb(agent_pid(c))
            per = (after - before) / args.pods / 1024
            print(f"{kind:<20} {statistics.median(times):>19.2f}s {max(times):>7.2f}s "
                  f"{per:>17.1f} MB")  # fmt: skip
            delete_all(c, f"bench=b{n}")
    print("reference: kubelet pod startup SLO 5 s p99 (pulled images); containerd ~0.3-0.5 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
