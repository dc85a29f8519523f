"""Ingress end to end on a real 2-node local cluster, from the external client: knemu's
ingress controller runs as pods behind a LoadBalancer Service (examples/ingress/), finds the
api-server with in-cluster configuration, fills in the Ingress's status, and routes /coffee
and /tea to two Services, 404 elsewhere; the client's own address arrives in X-Forwarded-For
(externalTrafficPolicy: Local).  All traffic stays inside the cluster's namespaces."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from localcluster import LocalCluster, local_cluster, read_until

from knemu.testing import wait_until

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(600)]

ECHO = re.compile(r"Host=(\S*)\s+Path=(\S*)\s+From=(\S+)\s+ClientIP=(\S+)\s+XFF=(\S*)")
NS = "ingress-knemu"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("knemu-ingress"), nodes=2) as c:
        c.apply_file("examples/ingress/ingress-controller.yaml")
        c.apply_file("examples/ingress/cafe.yaml")
        c.wait_ready(2, namespace=NS, timeout_s=120)
        c.wait_ready(2, selector="app=coffee")
        c.wait_ready(2, selector="app=tea")
        yield c


def from_outside(c: LocalCluster, *cmd: str) -> subprocess.CompletedProcess[str]:
    return c.knemu("external", "--name", c.name, "--state-dir", str(c.state_root), "--", *cmd,
                   check=False, timeout_s=30)  # fmt: skip


def external_ip(c: LocalCluster) -> str:
    ingress = c.service("knemu-ingress", NS).get("status", {}).get("loadBalancer", {})
    return str((ingress.get("ingress") or [{}])[0].get("ip", ""))


def test_ingress_status_carries_the_controllers_load_balancer_address(
    cluster: LocalCluster,
) -> None:
    wait_until(lambda: external_ip(cluster), 30, what="the controller Service's address")
    lb = external_ip(cluster)

    def published() -> bool:
        ing = cluster.get("/apis/networking.k8s.io/v1/namespaces/default/ingresses/cafe")
        return bool(ing.get("status", {}).get("loadBalancer", {}).get("ingress") == [{"ip": lb}])

    wait_until(published, 60, what="Ingress cafe's status.loadBalancer from its controller")
    out = cluster.knemu("get", "ingress", "cafe").stdout
    assert re.search(rf"cafe\s+knemu\s+\*\s+{re.escape(lb)}\s+80\s", out), out


def test_paths_route_to_two_services_from_the_external_client(cluster: LocalCluster) -> None:
    lb = wait_until(lambda: external_ip(cluster), 30, what="the controller Service's address")
    external = cluster.subnet.rsplit(".", 1)[0] + ".2"  # the external client (.2 of the subnet)

    def answer(path: str) -> re.Match[str] | None:
        out = from_outside(cluster, "curl", "-s", "-m", "5", f"http://{lb}{path}")
        return ECHO.search(out.stdout)

    wait_until(lambda: answer("/coffee") is not None, 60, what=f"an answer from {lb}/coffee")
    seen = set()
    for _ in range(6):
        coffee, tea = answer("/coffee/latte"), answer("/tea")
        assert coffee is not None and tea is not None
        assert coffee.group(3).startswith("coffee-") and tea.group(3).startswith("tea-")
        assert coffee.group(2) == "/coffee/latte"
        assert coffee.group(5) == external, coffee.group(0)  # client address kept (Local)
        seen |= {coffee.group(3), tea.group(3)}
    assert len(seen) >= 3, seen  # requests spread over the replicas
    status = from_outside(cluster, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                          "-m", "5", f"http://{lb}/coffeecake")  # fmt: skip
    assert status.stdout == "404"


def test_the_external_clients_ingress_traffic_is_in_the_flow_log(cluster: LocalCluster) -> None:
    """`knemu flows -f` shows the LoadBalancer DNAT of the client's request to a controller pod."""
    lb = wait_until(lambda: external_ip(cluster), 30, what="the controller Service's address")
    external = cluster.subnet.rsplit(".", 1)[0] + ".2"
    argv = [sys.executable, "-m", "knemu.cli", "flows", "-f", "--ip", external, "-o", "json"]
    proc = subprocess.Popen(argv, env=cluster.env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    want = rf'"nat":\s*"dnat".*"service":\s*"{NS}/knemu-ingress:http".*'
    try:
        seen = ""
        for _ in range(10):  # the watch subscribes in the background: ask until it shows
            from_outside(cluster, "curl", "-s", "-m", "5", f"http://{lb}/tea")
            try:
                seen = read_until(proc, proc.stdout, want, timeout_s=3)
                break
            except AssertionError:
                continue
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    events = [json.loads(line) for line in seen.splitlines() if line.startswith("{")]
    dnat = [e for e in events if e.get("type") == "FlowTranslated" and e.get("nat") == "dnat"
            and e.get("service") == f"{NS}/knemu-ingress:http"]  # fmt: skip
    assert dnat, seen[-2000:]
    controllers = {p["status"]["podIP"] for p in cluster.pods(NS)}
    assert {e["translated"]["dst_ip"] for e in dnat} <= controllers, dnat[:3]


def test_ingress_survives_the_announcing_node_being_killed(cluster: LocalCluster) -> None:
    """Last in the module: it kills a node.  The controller Service's address moves to the
    other node (MetalLB L2 failover; externalTrafficPolicy Local: a node with a controller pod,
    re-created there if need be) and the Ingress answers again from the external client."""
    lb = wait_until(lambda: external_ip(cluster), 30, what="the controller Service's address")
    nodes = cluster.node_names()

    def announcers() -> list[str]:
        return [n for n in nodes if lb in cluster.table(n).get("load_balancer_announced", [])]

    wait_until(lambda: len(announcers()) == 1, 30, what=f"one node announcing {lb}")
    (victim,) = announcers()
    out = cluster.knemu("chaos", "--runtime", "local", "--cluster", cluster.name,
                        "--state-dir", str(cluster.state_root), "kill-node", victim)  # fmt: skip
    assert "killed" in out.stdout
    survivor = next(n for n in nodes if n != victim)
    wait_until(lambda: lb in cluster.table(survivor).get("load_balancer_announced", []), 120,
               what=f"{survivor} announcing {lb}")  # fmt: skip

    def coffee() -> bool:
        out = from_outside(cluster, "curl", "-s", "-m", "3", f"http://{lb}/coffee")
        m = ECHO.search(out.stdout)
        return m is not None and m.group(3).startswith("coffee-")

    wait_until(coffee, 120, what=f"http://{lb}/coffee answered again after the failover")
