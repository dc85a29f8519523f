"""LoadBalancer addresses from outside the cluster on a real 3-node local cluster: one node
announces the address (MetalLB L2 style), the external client reaches the service through it,
and when that node is killed the address moves to another node.  All traffic stays inside the
cluster's namespaces; the fixture always runs `knemu down`."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import pytest
from localcluster import LocalCluster, local_cluster

from knemu.testing import wait_until

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(600)]

LB_IP = "192.0.2.50"
FROM = re.compile(r"From=(\S+)")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("knemu-state")) as c:
        c.apply_file("examples/service-load-balancer.yaml")
        c.wait_ready(3, selector="app=lb-web")
        yield c


def from_outside(c: LocalCluster, *cmd: str) -> subprocess.CompletedProcess[str]:
    return c.knemu("external", "--name", c.name, "--state-dir", str(c.state_root), "--", *cmd,
                   check=False, timeout_s=30)  # fmt: skip


def announcers(c: LocalCluster, nodes: list[str]) -> list[str]:
    return [n for n in nodes if LB_IP in c.table(n).get("load_balancer_announced", [])]


def answered(c: LocalCluster) -> bool:
    out = from_outside(c, "curl", "-s", "-m", "3", f"http://{LB_IP}/")
    return FROM.search(out.stdout) is not None


def test_status_carries_the_requested_address(cluster: LocalCluster) -> None:
    ingress = cluster.service("lb-web")["status"]["loadBalancer"]["ingress"]
    assert [i["ip"] for i in ingress] == [LB_IP]


def test_one_node_announces_and_the_external_client_is_answered(cluster: LocalCluster) -> None:
    nodes = ["node-1", "node-2", "node-3"]
    wait_until(
        lambda: len(announcers(cluster, nodes)) == 1, 30, what=f"one node announcing {LB_IP}"
    )
    wait_until(lambda: answered(cluster), 30, what=f"an answer from {LB_IP}")
    for _ in range(5):
        assert answered(cluster)


GUARDED = """apiVersion: v1
kind: Service
metadata:
  name: lb-guarded
spec:
  type: LoadBalancer
  loadBalancerIP: 192.0.2.51
  loadBalancerSourceRanges: ["10.0.0.0/8"]
  allocateLoadBalancerNodePorts: false
  selector:
    app: lb-web
  ports:
  - port: 80
    targetPort: 8080
"""


def test_source_ranges_drop_other_clients_visibly(cluster: LocalCluster) -> None:
    c = cluster
    c.apply(GUARDED)
    svc = c.service("lb-guarded")
    assert "nodePort" not in svc["spec"]["ports"][0]  # allocateLoadBalancerNodePorts: false
    nodes = ["node-1", "node-2", "node-3"]

    def announcers_51() -> list[str]:
        return [n for n in nodes if "192.0.2.51" in c.table(n).get("load_balancer_announced", [])]

    wait_until(lambda: len(announcers_51()) == 1, 30, what="one node announcing 192.0.2.51")
    (node,) = announcers_51()
    out = from_outside(c, "curl", "-s", "-m", "2", "http://192.0.2.51/")
    assert out.returncode == 28, out  # dropped: the external client is not in 10.0.0.0/8

    def dropped() -> bool:
        counters = c.table(node)["counters"]
        return bool(counters.get("drop_load_balancer_source_range", 0))

    wait_until(dropped, 10, what=f"{node} counting the source-range drop")
    flows = c.knemu("flows", node, "-o", "json", "--port", "80")
    assert "load_balancer_source_range" in flows.stdout, flows.stdout


def test_the_address_moves_when_its_node_is_killed(cluster: LocalCluster) -> None:
    nodes = ["node-1", "node-2", "node-3"]
    wait_until(
        lambda: len(announcers(cluster, nodes)) == 1, 30, what=f"one node announcing {LB_IP}"
    )
    (victim,) = announcers(cluster, nodes)
    out = cluster.knemu("chaos", "--runtime", "local", "--cluster", cluster.name,
                        "--state-dir", str(cluster.state_root), "kill-node", victim)  # fmt: skip
    assert "killed" in out.stdout
    survivors = [n for n in nodes if n != victim]
    wait_until(
        lambda: len(announcers(cluster, survivors)) == 1,
        60,
        what=f"{LB_IP} announced by a surviving node",
    )
    # Pods on the dead node leave the endpoints once it is NotReady; the others answer.
    wait_until(lambda: answered(cluster), 60, what=f"an answer from {LB_IP} after the failover")
    for _ in range(5):
        assert answered(cluster)
