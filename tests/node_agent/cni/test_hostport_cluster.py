"""hostPort and the CNI conflist on a real 3-node local cluster (`knemu up`), seed 001.

One cluster for the module; the tests run in file order (the last one deletes the hostPort
pod).  All traffic stays inside the cluster's namespaces.  The fixture always runs
`knemu down` and checks that nothing of the cluster is left.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator

import pytest
from localcluster import LocalCluster, local_cluster, tools_pod

from knemu.testing import wait_until

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(600)]

FROM = re.compile(r"From=(\S+)\s+ClientIP=(\S+)")
NO_PORTS = "node(s) didn't have free ports for the requested pod ports"
HOST_PORT = 8088
WEB = """apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    app: hp-web
spec:
  {placement}
  containers:
  - name: web
    image: amsy810/echo-nginx
    ports:
    - containerPort: 8080
      hostPort: 8088
    - containerPort: 8080
      hostPort: 8088
      protocol: UDP
"""


def web(name: str, placement: str) -> str:
    return WEB.format(name=name, placement=placement)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("knemu-state")) as c:
        c.apply(tools_pod("tools-1", "node-1"))
        # through the scheduler, which may put it on node-2 only
        c.apply(web("hp-web", "nodeSelector: {kubernetes.io/hostname: node-2}"))
        c.wait_ready(1, selector="role=tools")
        c.wait_ready(1, selector="app=hp-web")
        yield c


def curl_from_node(c: LocalCluster, node: int, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", c.node_ns(node), "curl", "-s", "-m", "5", url],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip


def answered_by(c: LocalCluster, node: int, url: str, pod: str) -> bool:
    match = FROM.search(curl_from_node(c, node, url).stdout)
    return match is not None and match.group(1) == pod


def pod_status(c: LocalCluster, name: str) -> dict[str, object]:
    status: dict[str, object] = c.get(f"/api/v1/namespaces/default/pods/{name}").get("status", {})
    return status


def events_for(c: LocalCluster, name: str, reason: str) -> list[dict[str, object]]:
    items = c.get("/api/v1/namespaces/default/events")["items"]
    return [e for e in items
            if e["involvedObject"]["name"] == name and e["reason"] == reason]  # fmt: skip


def test_host_port_answers_on_its_node_ip_only(cluster: LocalCluster) -> None:
    url = f"http://{cluster.node_ip(2)}:{HOST_PORT}/"
    wait_until(
        lambda: answered_by(cluster, 3, url, "hp-web"), 30, what="hp-web on node-2's hostPort"
    )
    match = FROM.search(curl_from_node(cluster, 3, url).stdout)
    # a userspace relay like the NodePort proxy: the pod sees node-2's gateway as the client
    assert match is not None and match.group(2) == "10.244.2.1"
    # a pod on node-1 reaches it too
    out = cluster.exec("tools-1", f"curl -s -m 5 {url}")
    assert FROM.search(out.stdout) and "From=hp-web" in out.stdout, out.stdout + out.stderr
    # only node-2 publishes it: node-1 refuses (curl exit 7, connection refused)
    other = curl_from_node(cluster, 3, f"http://{cluster.node_ip(1)}:{HOST_PORT}/")
    assert other.returncode == 7, other
    rows = cluster.table("node-2")["host_ports"]
    published = [(r["pod"], r["protocol"], r["host_port"], r["container_port"]) for r in rows]
    assert published == [("default/hp-web", proto, HOST_PORT, 8080) for proto in ("TCP", "UDP")]


def test_udp_host_port_answers_too(cluster: LocalCluster) -> None:
    def answered() -> bool:
        out = subprocess.run(
            ["ip", "netns", "exec", cluster.node_ns(3), "socat", "-T", "2", "-",
             f"UDP:{cluster.node_ip(2)}:{HOST_PORT}"],
            input="hello\n", capture_output=True, text=True, check=False, timeout=30,
        )  # fmt: skip
        match = FROM.search(out.stdout)
        return match is not None and match.group(1) == "hp-web"

    wait_until(answered, 30, what="a UDP answer on node-2's hostPort", interval_s=0.2)


def test_each_node_serves_its_conflist(cluster: LocalCluster) -> None:
    conf = json.loads(cluster.knemu("cni", "node-2").stdout)
    pod_cidr = cluster.get("/api/v1/nodes/node-2")["spec"]["podCIDR"]
    plugin, portmap = conf["plugins"]
    assert conf["cniVersion"] == "1.0.0" and plugin["type"] == "knemu"
    assert plugin["ipam"]["subnet"] == "usePodCidr"
    assert plugin["ipam"]["ranges"][0][0]["subnet"] == pod_cidr
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}}
    written = cluster.state_root / f"cluster-{cluster.name}" / "node-2" / "cni" / "net.d"
    assert json.loads((written / "10-knemu.conflist").read_text()) == conf
    every = json.loads(cluster.knemu("cni").stdout)
    assert sorted(every) == ["node-1", "node-2", "node-3"]
    cidrs = {n: c["plugins"][0]["ipam"]["ranges"][0][0]["subnet"] for n, c in every.items()}
    assert len(set(cidrs.values())) == 3 and cidrs["node-2"] == pod_cidr


def test_the_scheduler_keeps_a_second_pod_off_the_node(cluster: LocalCluster) -> None:
    cluster.apply(web("hp-twin", "nodeSelector: {kubernetes.io/hostname: node-2}"))
    wait_until(lambda: bool(events_for(cluster, "hp-twin", "FailedScheduling")), 30,
         what="FailedScheduling for hp-twin")  # fmt: skip
    message = str(events_for(cluster, "hp-twin", "FailedScheduling")[0]["message"])
    assert message.startswith("0/3 nodes are available: ") and f"1 {NO_PORTS}" in message
    assert pod_status(cluster, "hp-twin")["phase"] == "Pending"
    cluster.knemu("delete", "pod", "hp-twin")


def test_a_pod_pinned_to_the_node_by_hand_is_rejected_by_its_agent(
    cluster: LocalCluster,
) -> None:
    cluster.apply(web("hp-pinned", "nodeName: node-2"))
    wait_until(lambda: pod_status(cluster, "hp-pinned").get("phase") == "Failed", 30,
         what="hp-pinned rejected")  # fmt: skip
    status = pod_status(cluster, "hp-pinned")
    assert status["reason"] == "NodePorts"
    assert str(status["message"]).startswith(f"Pod was rejected: Predicate NodePorts failed: "
                                             f"{NO_PORTS}")  # fmt: skip
    wait_until(
        lambda: bool(events_for(cluster, "hp-pinned", "NodePorts")), 30, what="NodePorts event"
    )
    url = f"http://{cluster.node_ip(2)}:{HOST_PORT}/"
    assert answered_by(cluster, 3, url, "hp-web"), "the first pod keeps its port"
    cluster.knemu("delete", "pod", "hp-pinned")


def test_the_example_lands_on_a_free_node_and_answers_there(cluster: LocalCluster) -> None:
    cluster.apply_file("examples/pod-host-port.yaml")
    pod = cluster.wait_ready(1, selector="app=host-port-web")[0]
    node = int(pod["spec"]["nodeName"].rsplit("-", 1)[1])
    assert node != 2  # node-2's 8088/TCP is taken
    url = f"http://{cluster.node_ip(node)}:{HOST_PORT}/"
    wait_until(
        lambda: answered_by(cluster, 2, url, "host-port-web"), 30, what="the example's hostPort"
    )
    cluster.knemu("delete", "pod", "host-port-web")


def test_deleting_the_pod_removes_the_mapping(cluster: LocalCluster) -> None:
    url = f"http://{cluster.node_ip(2)}:{HOST_PORT}/"
    assert answered_by(cluster, 3, url, "hp-web")
    cluster.knemu("delete", "pod", "hp-web")
    wait_until(lambda: curl_from_node(cluster, 3, url).returncode == 7, 60,
         what="connection refused on node-2's hostPort")  # fmt: skip
    assert cluster.table("node-2")["host_ports"] == []
