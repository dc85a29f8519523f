"""Chaos on a real 3-node local cluster (`knemu up`): a node is killed under traffic.

The local counterpart of tests/compose/test_chaos_compose.py's node-kill scenario, driven
through `knemu chaos --runtime local`.  Default timings: lease 1 s, NotReady after 4 s without
a renewal, eviction 10 s later.  All traffic stays inside the cluster's namespaces.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Iterator
from typing import Any

import pytest
from localcluster import FROM, LocalCluster, local_cluster, wait_backends

from knemu.testing import wait_until
from knemu.testing_traffic import RequestResult, parse_request_log, request_loop_pod

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(600)]

SERVICE = "default/sample-clusterip"
GRACE_S = 4.0
MARGIN_S = 8.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("knemu-state")) as c:
        c.apply_file("examples/sample-deployment.yaml")
        c.apply_file("examples/sample-clusterip.yaml")
        c.wait_ready(3, selector="app=sample-app")
        wait_backends(c, SERVICE, 3)
        yield c


def chaos(c: LocalCluster, *args: str) -> str:
    """`knemu chaos ...` against this local cluster, as a user runs it."""
    out = c.knemu("chaos", "--runtime", "local", "--cluster", c.name,
                  "--state-dir", str(c.state_root), *args)  # fmt: skip
    return out.stdout


def ready_pods(c: LocalCluster) -> dict[str, str]:
    """name -> node of the ready, not terminating sample-app pods."""
    out = {}
    for p in c.pods(selector="app=sample-app"):
        conds = {x["type"]: x["status"] for x in p.get("status", {}).get("conditions", [])}
        if conds.get("Ready") == "True" and "deletionTimestamp" not in p["metadata"]:
            out[p["metadata"]["name"]] = p["spec"]["nodeName"]
    return out


def ready_nodes(c: LocalCluster) -> set[str]:
    names = set()
    for node in c.get("/api/v1/nodes")["items"]:
        conds = {x["type"]: x["status"] for x in node.get("status", {}).get("conditions", [])}
        if conds.get("Ready") == "True":
            names.add(node["metadata"]["name"])
    return names


def agent_healthy(c: LocalCluster, node: str) -> bool:
    try:
        with c.open(f"/api/v1/nodes/{node}/proxy/healthz", timeout_s=2) as resp:
            return bool(resp.read().strip() == b"ok")
    except OSError:  # 503 from the node proxy until the agent's API is up
        return False


def usable_backends(table: dict[str, Any], key: str = SERVICE) -> set[str]:
    for svc in table["services"]:
        if svc["key"] == key:
            return {b["ip"] for port in svc["ports"] for b in port["backends"] if b["usable"]}
    return set()


def start_client(c: LocalCluster, name: str, node: str, target: str, count: int) -> None:
    """A pod on ``node`` that requests ``target`` every 0.1 s, ``count`` times (a bounded loop;
    knemu.testing_traffic): waits until it has logged its first request."""
    c.apply(request_loop_pod(name, node, target, count))
    wait_until(
        lambda: bool(results(c, name)),
        60,
        what=f"{name} to report its first request",
        interval_s=0.2,
    )


def results(c: LocalCluster, pod: str) -> list[RequestResult]:
    """(epoch sent, ok, curl exit code) per logged request of ``pod``."""
    return parse_request_log(c.knemu("logs", pod, check=False).stdout)


def test_kill_node_endpoints_leave_every_table_and_traffic_recovers(cluster: LocalCluster) -> None:
    placement = ready_pods(cluster)
    assert sorted(placement.values()) == ["node-1", "node-2", "node-3"], placement
    client_node = "node-1"
    victim = sorted(n for n in set(placement.values()) if n != client_node)[0]
    live = [n for n in cluster.node_names() if n != victim]
    victim_ips = {p["status"]["podIP"] for p in cluster.pods(selector="app=sample-app")
                  if p["spec"]["nodeName"] == victim}  # fmt: skip
    assert victim_ips, f"no replica on {victim}: {placement}"
    # ~0.1 s per request while all is well, up to 1.1 s while one times out: a bounded loop
    # that outlasts kill (0 s), NotReady (4 s), eviction (14 s) and 5 s after recovery.
    start_client(cluster, "chaos-client", client_node, "http://sample-clusterip:8080", 700)
    try:
        killed_at = time.time()
        assert "killed" in chaos(cluster, "kill-node", victim)

        def gone_everywhere() -> bool:
            return all(not (usable_backends(cluster.table(n)) & victim_ips) for n in live)

        # The deadline counts from the kill, not from when `knemu chaos` returned.
        wait_until(gone_everywhere, killed_at + GRACE_S + MARGIN_S - time.time(),
             what=f"{victim}'s endpoints to leave every table", interval_s=0.05)  # fmt: skip
        gone_after = time.time() - killed_at

        def recovered() -> bool:
            pods = ready_pods(cluster)
            if len(pods) != 3 or victim in pods.values():
                return False
            ips = {p["status"]["podIP"] for p in cluster.pods(selector="app=sample-app")
                   if p["metadata"]["name"] in pods}  # fmt: skip
            return all(usable_backends(cluster.table(n)) == ips for n in live)

        wait_until(
            recovered,
            90,
            what="3 ready replicas on live nodes, in every live table",
            interval_s=0.2,
        )
        recovered_at = time.time()
        wait_until(
            lambda: any(t > recovered_at + 5 for t, _, _ in results(cluster, "chaos-client")),
            30,
            what="5 s of requests after recovery",
            interval_s=0.2,
        )
        rows = [r for r in results(cluster, "chaos-client") if r.sent_at >= killed_at]
        failures = [(t, rc) for t, ok, rc in rows if not ok]
        window = (max(t for t, _ in failures) - killed_at) if failures else 0.0
        print(f"\n{victim} killed: its endpoints gone from every live table after "
              f"{gone_after:.1f} s; 3 replicas ready on live nodes after "
              f"{recovered_at - killed_at:.1f} s; client error window {window:.1f} s "
              f"({len(failures)} of {len(rows)} requests failed; curl exit codes "
              f"{sorted({rc for _, rc in failures})})")  # fmt: skip
        late = [(round(t - killed_at, 2), rc) for t, rc in failures
                if t > killed_at + GRACE_S + MARGIN_S]  # fmt: skip
        assert not late, f"requests failed after the window (s after kill, curl rc): {late}"
        after = [(round(t - killed_at, 2), rc) for t, ok, rc in rows if t > recovered_at and not ok]
        assert not after, f"requests failed after recovery: {after}"
    finally:
        cluster.knemu("delete", "pod", "chaos-client", check=False)
        # Put the node back for whatever runs next: a killed local node starts again with
        # its recorded command line and re-registers as itself.
        assert "started" in chaos(cluster, "start-node", victim)
        # Ready comes with registration, before the agent's HTTP API listens (as `knemu up`
        # does, wait for both).
        wait_until(lambda: victim in ready_nodes(cluster) and agent_healthy(cluster, victim), 60,
             what=f"{victim} Ready and serving again", interval_s=0.2)  # fmt: skip
    wait_backends(cluster, SERVICE, 3)  # the restarted node's router has the service again
    assert ready_nodes(cluster) == {"node-1", "node-2", "node-3"}


ECHO = """apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    app: reuse
spec:
  nodeName: {node}
  containers:
  - name: echo
    image: amsy810/echo-nginx:v2.0
"""

REUSE_SERVICE = """apiVersion: v1
kind: Service
metadata:
  name: reuse
spec:
  selector:
    app: reuse
  ports:
  - name: http
    protocol: TCP
    port: 8080
    targetPort: 80
"""


REUSE_PORT = 45678
REUSE_CLIENT = """
import socket, sys
ip, port, local = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.settimeout(3)
s.bind(("", local))
try:
    s.connect((ip, port))
    s.sendall(b"GET / HTTP/1.1\\r\\nHost: reuse\\r\\nConnection: close\\r\\n\\r\\n")
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    print(data.decode(errors="replace").split("\\r\\n\\r\\n", 1)[-1].strip())
except OSError as exc:
    print(f"error: {exc!r}")
finally:
    s.close()
"""


def test_new_connection_reusing_a_closed_flows_port_gets_a_live_backend(
    cluster: LocalCluster,
) -> None:
    """The mechanism behind late failures in the node-kill scenario, made deterministic: the
    client reconnects from the same source port after the flow's backend pod was deleted."""
    cluster.apply(ECHO.format(name="reuse-a", node="node-2"))
    cluster.apply(REUSE_SERVICE)
    cluster.apply("""apiVersion: v1
kind: Pod
metadata:
  name: reuse-client
spec:
  nodeName: node-1
  containers:
  - name: tools
    image: amsy810/tools:v2.0
    command: ["sleep", "3600"]
""")
    try:
        cluster.wait_ready(1, selector="app=reuse")
        wait_until(lambda: usable_backends(cluster.table("node-1"), "default/reuse") != set(), 60,
             what="reuse-a in node-1's table", interval_s=0.2)  # fmt: skip
        ip = cluster.service("reuse")["spec"]["clusterIP"]
        # Connection: close, and the client reads to EOF before closing: the server closes
        # first, so the client's port is free again at once (no TIME_WAIT on the client)
        # while node-1 keeps the closed flow's conntrack entry.
        # The program travels in the command line: a pod sees neither the test's tmp_path
        # (its /tmp is its own) nor files only root may read.
        curl = f"python3 -c {shlex.quote(REUSE_CLIENT)} {ip} 8080 {REUSE_PORT}"
        wait_until(
            lambda: pod_ready(cluster, "reuse-client"),
            60,
            what="reuse-client Ready",
            interval_s=0.2,
        )
        first = cluster.exec("reuse-client", curl).stdout
        assert [f for f, _ in FROM.findall(first)] == ["reuse-a"], first
        cluster.apply(ECHO.format(name="reuse-b", node="node-3"))
        cluster.wait_ready(2, selector="app=reuse")
        cluster.knemu("delete", "pod", "reuse-a")
        b_ip = str(cluster.get("/api/v1/namespaces/default/pods/reuse-b")["status"]["podIP"])
        wait_until(
            lambda: all(
                usable_backends(cluster.table(n), "default/reuse") == {b_ip}
                for n in cluster.node_names()
            ),
            60,
            what="only reuse-b left in every table",
            interval_s=0.2,
        )
        second = cluster.exec("reuse-client", curl).stdout
        assert [f for f, _ in FROM.findall(second)] == ["reuse-b"], (
            f"same source port after reuse-a left: {second.strip()!r}; node-1 flows: "
            + flows_of(cluster, "node-1", REUSE_PORT)
        )
    finally:
        for kind, name in (("pod", "reuse-client"), ("pod", "reuse-a"), ("pod", "reuse-b"),
                           ("service", "reuse")):  # fmt: skip
            cluster.knemu("delete", kind, name, check=False)


def pod_ready(c: LocalCluster, name: str) -> bool:
    status = c.get(f"/api/v1/namespaces/default/pods/{name}").get("status", {})
    return any(x["type"] == "Ready" and x["status"] == "True"
               for x in status.get("conditions", []))  # fmt: skip


def flows_of(c: LocalCluster, node: str, port: int) -> str:
    out = c.knemu("flows", node, "--port", str(port), check=False).stdout
    return " | ".join(line for line in out.splitlines() if re.search(r"REFUSED|DROPPED", line))
