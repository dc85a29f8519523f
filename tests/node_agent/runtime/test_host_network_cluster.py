"""hostNetwork pods on a real 3-node local cluster (`knemu up`).

A hostNetwork nginx on node-2 listens on node-2's own IP, reports it as its podIP, has the
node's hostname and addresses, backs a ClusterIP Service reachable from pods on its own and
other nodes, and takes its resolv.conf from its dnsPolicy.  One cluster for the module; the
tests run in file order (the last one deletes the pod).  All traffic stays inside the
cluster's namespaces; the fixture always runs `knemu down` and checks nothing is left.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import pytest
from localcluster import REPO, LocalCluster, local_cluster, tools_pod

from knemu.testing import wait_until

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(600)]

FROM = re.compile(r"From=(\S+)\s+ClientIP=(\S+)")
PORT = 8089
WEB = f"""apiVersion: v1
kind: Pod
metadata:
  name: hn-web
  labels:
    app: hn-web
spec:
  hostNetwork: true
  nodeSelector: {{kubernetes.io/hostname: node-2}}
  containers:
  - name: web
    image: nginx
    ports:
    - containerPort: {PORT}
---
apiVersion: v1
kind: Service
metadata:
  name: hn-svc
spec:
  selector:
    app: hn-web
  ports:
  - port: 80
    targetPort: {PORT}
"""
WITH_HOST_NET_DNS = """apiVersion: v1
kind: Pod
metadata:
  name: hn-dns
  labels:
    role: hn-dns
spec:
  hostNetwork: true
  dnsPolicy: ClusterFirstWithHostNet
  nodeName: node-2
  containers:
  - name: tools
    image: tools
    command: ["sleep", "3600"]
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("knemu-state")) as c:
        c.apply(tools_pod("tools-1", "node-1"))
        c.apply(tools_pod("tools-2", "node-2"))
        c.apply(WEB)
        c.apply(WITH_HOST_NET_DNS)
        c.wait_ready(2, selector="role=tools")
        c.wait_ready(1, selector="app=hn-web")
        c.wait_ready(1, selector="role=hn-dns")
        yield c


def in_node(c: LocalCluster, node: int, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", c.node_ns(node), *argv],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip


def answered(out: subprocess.CompletedProcess[str]) -> bool:
    match = FROM.search(out.stdout)
    return match is not None and match.group(1) == "hn-web"


def test_its_pod_ip_is_the_node_ip(cluster: LocalCluster) -> None:
    status = cluster.get("/api/v1/namespaces/default/pods/hn-web")["status"]
    assert status["podIP"] == cluster.node_ip(2) == status["hostIP"]
    assert [a["ip"] for a in status["podIPs"]] == [cluster.node_ip(2)]


def test_it_listens_on_the_node_ip(cluster: LocalCluster) -> None:
    url = f"http://{cluster.node_ip(2)}:{PORT}/"
    wait_until(lambda: answered(in_node(cluster, 3, "curl", "-s", "-m", "5", url)), 30,
         what="hn-web on node-2's IP from node-3")  # fmt: skip
    # no relay in between: the client is node-3 itself
    match = FROM.search(in_node(cluster, 3, "curl", "-s", "-m", "5", url).stdout)
    assert match is not None and match.group(2) == cluster.node_ip(3)
    out = cluster.exec("tools-1", f"curl -s -m 5 {url}")
    assert answered(out), out.stdout + out.stderr
    # nothing listens on other nodes; node-2 reserves the port (kubelet admission) but
    # relays nothing: the pod's own process holds it
    other = in_node(cluster, 3, "curl", "-s", "-m", "5", f"http://{cluster.node_ip(1)}:{PORT}/")
    assert other.returncode == 7, other
    rows = cluster.table("node-2")["host_ports"]
    assert [(r["pod"], r["host_port"], r["pod_ip"]) for r in rows] == [("default/hn-web", PORT, "")]


def test_exec_sees_the_node_address_and_hostname(cluster: LocalCluster) -> None:
    out = cluster.exec("hn-web", "hostname; ip -4 -o addr show")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "node-2"
    assert f"inet {cluster.node_ip(2)}/" in out.stdout
    node = in_node(cluster, 2, "ip", "-4", "-o", "addr", "show")
    assert sorted(lines[1:]) == sorted(node.stdout.splitlines())  # the node's own interfaces


def test_a_cluster_ip_service_selects_it(cluster: LocalCluster) -> None:
    def addresses() -> list[str]:
        items = cluster.get("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices")
        return [a for s in items["items"]
                if s["metadata"].get("labels", {}).get("kubernetes.io/service-name") == "hn-svc"
                for e in s.get("endpoints") or [] for a in e["addresses"]]  # fmt: skip

    wait_until(
        lambda: addresses() == [cluster.node_ip(2)], 30, what="hn-svc's endpoint at node-2's IP"
    )
    ip = cluster.service("hn-svc")["spec"]["clusterIP"]
    for client in ("tools-1", "tools-2"):  # another node, and the backend's own node
        out = cluster.exec(client, f"curl -s -m 5 http://{ip}/")
        assert answered(out), f"{client}: {out.stdout}{out.stderr}"
        out = cluster.exec(client, "curl -s -m 5 http://hn-svc/")
        assert answered(out), f"{client} by name: {out.stdout}{out.stderr}"
    # The node itself on node-3 (what a hostNetwork pod there would use): the flow crosses the
    # overlay to node-2's host and back, un-NATed on node-3.
    out = in_node(cluster, 3, "curl", "-s", "-m", "5", f"http://{ip}/")
    assert answered(out), f"node-3: {out.stdout}{out.stderr}"
    assert FROM.search(out.stdout).group(2) == "10.244.3.1"  # type: ignore[union-attr]


def test_dns_policy_decides_its_resolv_conf(cluster: LocalCluster) -> None:
    # ClusterFirst on a hostNetwork pod falls back to the node's resolver (Default)
    node_conf = in_node(cluster, 2, "cat", "/etc/resolv.conf").stdout
    out = cluster.exec("hn-web", "cat /etc/resolv.conf")
    nameservers = [ln for ln in out.stdout.splitlines() if ln.startswith("nameserver")]
    assert nameservers == [ln for ln in node_conf.splitlines() if ln.startswith("nameserver")]
    assert "10.96.0.10" not in out.stdout
    # ClusterFirstWithHostNet: the cluster resolver, and it answers from the node's namespace
    out = cluster.exec("hn-dns", "cat /etc/resolv.conf; hostname")
    assert "nameserver 10.96.0.10" in out.stdout
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in out.stdout
    assert out.stdout.splitlines()[-1] == "node-2"
    ip = cluster.service("hn-svc")["spec"]["clusterIP"]
    out = cluster.exec("hn-dns", "dig +short +time=2 +tries=2 hn-svc.default.svc.cluster.local")
    assert out.stdout.split() == [ip], out.stdout + out.stderr
    # from the node's own namespace to the service it backs itself (hn-web, same node)
    out = cluster.exec("hn-dns", "curl -s -m 5 http://hn-svc/")
    assert answered(out), out.stdout + out.stderr


def test_the_example_answers_on_its_node_ip(cluster: LocalCluster) -> None:
    cluster.apply_file("examples/pod-host-network.yaml")
    pod = cluster.wait_ready(1, selector="app=host-network-web")[0]
    node = int(pod["spec"]["nodeName"].rsplit("-", 1)[1])
    assert pod["status"]["podIP"] == cluster.node_ip(node)
    assert pod["spec"]["containers"][0]["ports"][0]["hostPort"] == 8090  # defaulted
    url = f"http://{cluster.node_ip(node)}:8090/"
    client = 1 if node != 1 else 2
    wait_until(lambda: FROM.search(in_node(cluster, client, "curl", "-s", "-m", "5", url).stdout)
         is not None, 30, what="the example on its node's IP")  # fmt: skip
    out = cluster.exec("tools-1", "curl -s -m 5 http://host-network-web/")
    assert "From=host-network-web" in out.stdout, out.stdout + out.stderr
    cluster.knemu("delete", "-f", str(REPO / "examples/pod-host-network.yaml"))


def test_deleting_it_closes_the_port(cluster: LocalCluster) -> None:
    url = f"http://{cluster.node_ip(2)}:{PORT}/"
    cluster.knemu("delete", "pod", "hn-web")
    wait_until(lambda: in_node(cluster, 3, "curl", "-s", "-m", "5", url).returncode == 7, 60,
         what="connection refused on node-2's port")  # fmt: skip
    # the node's namespace is still there and whole: its agent still answers
    assert cluster.get("/api/v1/nodes/node-2")["metadata"]["name"] == "node-2"
    out = cluster.exec("tools-2", "true")
    assert out.returncode == 0, out.stderr
