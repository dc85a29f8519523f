"""Chaos on a real 3-node docker compose cluster: kill, freeze, partition and impair nodes.

Default timings: lease 1 s, NotReady after 4 s without a renewal, eviction 10 s later.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from compose_helpers import ComposeCluster, compose_cluster, wait_until

from knemu.testing_traffic import parse_request_log, request_loop_pod

pytestmark = [pytest.mark.compose, pytest.mark.slow]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SERVICE = "default/sample-clusterip"
GRACE_S = 4.0
MARGIN_S = 8.0


@pytest.fixture(scope="module")
def cluster() -> Any:
    with compose_cluster(nodes=3) as c:
        c.knemu("apply", "-f", "-", stdin=(EXAMPLES / "sample-deployment.yaml").read_text())
        c.knemu("apply", "-f", "-", stdin=(EXAMPLES / "sample-clusterip.yaml").read_text())
        wait_until(lambda: len(ready_pods(c)) == 3, 120, "3 ready replicas")
        yield c


def chaos(cluster: ComposeCluster, *args: str) -> str:
    """`knemu chaos ...` from the host, as a user runs it (docker runtime)."""
    env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig()),
               COMPOSE_PROJECT_NAME=cluster.project)  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "knemu.cli", "chaos", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def ready_pods(cluster: ComposeCluster) -> dict[str, str]:
    """name -> node of the ready sample-app pods."""
    pods = cluster.rest("/api/v1/namespaces/default/pods?labelSelector=app%3Dsample-app")["items"]
    out = {}
    for p in pods:
        conds = {c["type"]: c["status"] for c in p.get("status", {}).get("conditions", [])}
        if conds.get("Ready") == "True" and "deletionTimestamp" not in p["metadata"]:
            out[p["metadata"]["name"]] = p["spec"]["nodeName"]
    return out


def pod_ips_on(cluster: ComposeCluster, node: str) -> set[str]:
    pods = cluster.rest(f"/api/v1/pods?fieldSelector=spec.nodeName%3D{node}")["items"]
    return {p["status"]["podIP"] for p in pods if p.get("status", {}).get("podIP")}


def usable_backends(table: dict[str, Any]) -> set[str]:
    for svc in table["services"]:
        if svc["key"] == SERVICE:
            return {b["ip"] for port in svc["ports"] for b in port["backends"] if b["usable"]}
    return set()


def start_client(cluster: ComposeCluster, name: str, node: str, target: str, count: int) -> None:
    """A pod on ``node`` that requests ``target`` every 0.1 s, ``count`` times (a bounded loop;
    knemu.testing_traffic): waits until it has logged its first request."""
    cluster.knemu("apply", "-f", "-", stdin=request_loop_pod(name, node, target, count))
    wait_until(lambda: results(cluster, name), 60, f"{name} to report its first request")


def results(cluster: ComposeCluster, pod: str) -> list[tuple[float, bool]]:
    """(epoch sent, ok) per logged request of ``pod``."""
    out = cluster.knemu("logs", pod, check=False)
    return [(r.sent_at, r.ok) for r in parse_request_log(out)]


def test_kill_node_endpoints_leave_every_table_and_traffic_recovers(
    cluster: ComposeCluster,
) -> None:
    placement = ready_pods(cluster)
    client_node = "node-1"
    victim = next(node for node in sorted(set(placement.values())) if node != client_node)
    replica_ips = {
        p["status"]["podIP"]
        for p in cluster.rest("/api/v1/namespaces/default/pods?labelSelector=app%3Dsample-app")[
            "items"
        ]
    }
    victim_ips = pod_ips_on(cluster, victim) & replica_ips
    assert victim_ips, f"no replica on {victim}: {placement}"
    start_client(cluster, "chaos-client", client_node, "http://sample-clusterip:8080", 900)

    killed_at = time.time()
    assert "killed" in chaos(cluster, "kill-node", victim)
    live = [n for n in ("node-1", "node-2", "node-3") if n != victim]

    def gone_everywhere() -> bool:
        return all(not (usable_backends(cluster.node_table(n)) & victim_ips) for n in live)

    wait_until(gone_everywhere, GRACE_S + MARGIN_S, f"{victim}'s endpoints to leave every table")
    gone_after = time.time() - killed_at
    wait_until(
        lambda: len(ready_pods(cluster)) == 3 and victim not in ready_pods(cluster).values(),
        90,
        "3 ready replicas on live nodes",
    )
    recovered_at = time.time()
    wait_until(
        lambda: any(t > recovered_at + 5 for t, _ in results(cluster, "chaos-client")),
        30,
        "5 s of requests after recovery",
    )
    rows = results(cluster, "chaos-client")
    failures = [t for t, ok in rows if not ok and t >= killed_at]
    print(
        f"endpoints gone everywhere after {gone_after:.1f} s; "
        f"client error window {(max(failures) - killed_at) if failures else 0:.1f} s "
        f"({len(failures)} failed requests)"
    )
    assert all(t <= killed_at + GRACE_S + MARGIN_S for t in failures)
    assert all(ok for t, ok in rows if t > recovered_at)
    cluster.knemu("delete", "pod", "chaos-client")
    # A killed node comes back when its container starts again: it re-registers as itself.
    assert "started" in chaos(cluster, "start-node", victim)
    wait_until(lambda: victim in cluster.ready_nodes(), 60, f"{victim} Ready again")


def test_freeze_and_thaw_a_node(cluster: ComposeCluster) -> None:
    victim = "node-3"
    assert "frozen" in chaos(cluster, "stop-node", victim)
    try:
        wait_until(
            lambda: victim not in cluster.ready_nodes(), GRACE_S + MARGIN_S, f"{victim} NotReady"
        )
    finally:
        assert "thawed" in chaos(cluster, "start-node", victim)
    wait_until(lambda: victim in cluster.ready_nodes(), 30, f"{victim} Ready again")


def results_direct(cluster: ComposeCluster, pod: str) -> list[tuple[float, bool]]:
    """The client's results read from its log file on the node (the api-server may be down)."""
    rows = []
    for node in cluster.containers("node"):
        _code, out = node.exec_run(
            ["sh", "-c", f"cat /run/knemu/pods/default_{pod}_*/*.log 2>/dev/null"]
        )
        rows += [(r.sent_at, r.ok) for r in parse_request_log(out.decode(errors="replace"))]
    return rows


def start_pinned_pod(cluster: ComposeCluster, name: str, node: str, image: str) -> str:
    """A pod of ``image`` pinned to ``node`` (tools pods idle until the test execs into them);
    waits until it runs and returns its IP."""
    tools = "tools" in image
    extra = '    command: ["sleep", "600"]\n' if tools else "    ports: [{containerPort: 80}]\n"
    manifest = f"""
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: {node}
  containers:
  - name: main
    image: {image}
{extra}"""
    cluster.knemu("apply", "-f", "-", stdin=manifest)

    def pod_ip() -> str:
        pod = cluster.rest(f"/api/v1/namespaces/default/pods/{name}")
        running = pod.get("status", {}).get("phase") == "Running"
        return str(pod["status"].get("podIP", "")) if running else ""

    wait_until(pod_ip, 60, f"{name} running on {node}")
    return pod_ip()


def start_tools_pod(cluster: ComposeCluster, name: str, node: str) -> None:
    """A tools pod (curl, dig) pinned to ``node``, idle until the test execs into it."""
    start_pinned_pod(cluster, name, node, "amsy810/tools:v2.0")


def fetch_from(cluster: ComposeCluster, pod: str, url: str, timeout_s: int = 3) -> str:
    """curl ``url`` from ``pod``: "<http code> <seconds>" ("000 ..." when nothing came back)."""
    out = cluster.knemu(
        "exec", pod, "--", "curl", "-s", "-m", str(timeout_s), "-o", "/dev/null",
        "-w", "%{http_code} %{time_total}", url, check=False,
    )  # fmt: skip
    return out.strip() or "(no output)"


def curl_from(cluster: ComposeCluster, pod: str, url: str, timeout_s: int = 3) -> bool:
    return fetch_from(cluster, pod, url, timeout_s).startswith("200 ")


def test_partition_cuts_cross_node_flows_and_heal_restores_them(cluster: ComposeCluster) -> None:
    # The test's own server on node-2 and client on node-1: no controller moves them meanwhile.
    node = "node-2"
    start_tools_pod(cluster, "probe", "node-1")
    target = f"http://{start_pinned_pod(cluster, 'impaired-web', node, 'nginx:1.16')}:80/"
    wait_until(lambda: curl_from(cluster, "probe", target), 20, "traffic before the partition")
    assert "impairment" in chaos(cluster, "partition", node)
    try:
        assert not curl_from(cluster, "probe", target, timeout_s=2)
    finally:
        assert "healed" in chaos(cluster, "heal", node)
    wait_until(lambda: curl_from(cluster, "probe", target), 20, "traffic after heal")

    # 30% loss of the node's underlay datagrams: TCP still completes transfers (retransmissions,
    # which back off exponentially, so a transfer may take several seconds).
    chaos(cluster, "loss", node, "30")
    try:
        transfers = [fetch_from(cluster, "probe", target, timeout_s=60) for _ in range(5)]
        assert all(t.startswith("200 ") for t in transfers), transfers
    finally:
        chaos(cluster, "heal", node)

    # 200 ms of delay on the node's underlay: round trips grow by it, and heal takes it away.
    chaos(cluster, "delay", node, "200")
    try:
        out = cluster.knemu(
            "exec", "probe", "--", "curl", "-s", "-o", "/dev/null", "-m", "10",
            "-w", "%{time_connect}", target,
        )  # fmt: skip
        assert float(out) >= 0.19
    finally:
        chaos(cluster, "heal")
    cluster.knemu("delete", "pod", "probe", "impaired-web")


def test_apiserver_sigkill_mid_traffic_loses_nothing(cluster: ComposeCluster) -> None:
    start_client(cluster, "steady-client", "node-1", "http://sample-clusterip:8080", 600)
    before = cluster.rest("/api/v1/namespaces/default/pods")["items"]
    killed_at = time.time()
    assert "killed" in chaos(cluster, "kill-node", "apiserver")
    # While it is down the data plane keeps serving from the last tables: wait for 5 s of requests.
    wait_until(
        lambda: any(t > killed_at + 5 for t, _ in results_direct(cluster, "steady-client")),
        30,
        "requests while the api-server is down",
    )
    assert "started" in chaos(cluster, "start-node", "apiserver")
    wait_until(lambda: cluster.rest("/api/v1/namespaces"), 60, "api-server back")
    after = cluster.rest("/api/v1/namespaces/default/pods")["items"]
    assert {p["metadata"]["uid"] for p in before} <= {p["metadata"]["uid"] for p in after}
    wait_until(
        lambda: any(t > killed_at + 8 for t, _ in results(cluster, "steady-client")),
        60,
        "requests after the restart",
    )
    rows = [ok for t, ok in results(cluster, "steady-client") if t >= killed_at]
    assert rows and all(rows), f"{rows.count(False)} of {len(rows)} requests failed"
    wait_until(lambda: len(cluster.ready_nodes()) == 3, 30, "nodes Ready after restart")


def test_restarted_dns_and_node_recover(cluster: ComposeCluster) -> None:
    start_tools_pod(cluster, "resolver", "node-1")

    def resolves() -> bool:
        out = cluster.knemu(
            "exec", "resolver", "--", "dig", "+short", "+time=1", "+tries=1",
            "sample-clusterip.default.svc.cluster.local", check=False,
        )  # fmt: skip
        return out.strip().startswith("10.96.")

    assert resolves()
    assert "restarted" in chaos(cluster, "restart", "dns")
    wait_until(resolves, 30, "DNS answers again after its restart")

    # A restarted node re-registers as itself and brings its pods back.
    node = "node-3"
    before = pod_ips_on(cluster, node)
    assert "restarted" in chaos(cluster, "restart", node)
    wait_until(lambda: node in cluster.ready_nodes(), 60, f"{node} Ready after restart")
    wait_until(lambda: len(ready_pods(cluster)) == 3, 90, "3 ready replicas after the restart")
    assert pod_ips_on(cluster, node) or not before
    cluster.knemu("delete", "pod", "resolver")
