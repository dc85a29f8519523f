"""NetworkPolicy enforced on a real 3-node local cluster (`knemu up`), with the example
policies of examples/network-policy applied unchanged (seed 001: a CNI plugin that enforces
policy, Calico's ``"policy": {"type": "k8s"}``).

The app (label app=sample-app, like seed 003's) runs on node-2; clients run on node-1 and
node-3, so every verdict is reached across the overlay.  A denied connection is a silent drop:
``curl -m 2`` times out (exit 28) rather than being refused, and the destination's node
reports a DROPPED flow with reason policy_denied.  Each test deletes the policies it applied.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator

import pytest
from localcluster import FROM, REPO, LocalCluster, local_cluster, wait_backends

from knemu.testing import wait_until

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(600)]

NS, OTHER_NS = "np", "np-other"
EXAMPLES = REPO / "examples" / "network-policy"
APP = """apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: sample-app
spec:
  nodeName: node-2
  containers:
  - name: echo
    image: amsy810/echo-nginx:v2.0
    ports:
    - name: http
      containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: sample-app
  ports:
  - name: http
    port: 8080
    targetPort: 80
"""


def client(name: str, role: str, node: str) -> str:
    return f"""apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    role: {role}
spec:
  nodeName: {node}
  containers:
  - name: tools
    image: tools
    command: ["sleep", "3600"]
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("knemu-state")) as c:
        c.apply(f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NS}\n")
        c.apply(f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {OTHER_NS}\n"
                "  labels:\n    team: frontend\n")  # fmt: skip
        c.apply(APP, namespace=NS)
        c.apply(client("frontend", "frontend", "node-1"), namespace=NS)
        c.apply(client("stranger", "stranger", "node-3"), namespace=NS)
        c.apply(client("outsider", "frontend", "node-1"), namespace=OTHER_NS)
        c.wait_ready(3, namespace=NS)
        c.wait_ready(1, namespace=OTHER_NS)
        wait_backends(c, f"{NS}/web", 1)
        yield c


def web_ip(c: LocalCluster) -> str:
    return str(c.get(f"/api/v1/namespaces/{NS}/pods/web")["status"]["podIP"])


def curl(c: LocalCluster, pod: str, url: str, namespace: str = NS) -> tuple[str, float, int]:
    """(who answered or "", seconds, curl's exit code) for one request with a 2 s limit."""
    out = c.exec(pod, f"curl -s -m 2 -o /dev/stdout -w ' took=%{{time_total}}' {url}; "
                 "echo \" rc=$?\"", namespace=namespace)  # fmt: skip
    took = float(re.search(r"took=([\d.]+)", out.stdout).group(1))  # type: ignore[union-attr]
    rc = int(re.search(r"rc=(\d+)", out.stdout).group(1))  # type: ignore[union-attr]
    match = FROM.search(out.stdout)
    return (match.group(1) if match else ""), took, rc


def answered(c: LocalCluster, pod: str, url: str, namespace: str = NS) -> bool:
    return curl(c, pod, url, namespace)[0] == "web"


def assert_times_out(c: LocalCluster, pod: str, url: str, namespace: str = NS) -> None:
    who, took, rc = curl(c, pod, url, namespace)
    # Dropped, not refused: curl gives up after its 2 s (28), it never gets a RST (7).
    assert (who, rc) == ("", 28) and took >= 1.9, (pod, url, who, took, rc)


def apply_example(c: LocalCluster, name: str) -> None:
    c.knemu("apply", "-n", NS, "-f", str(EXAMPLES / name))


def wait_enforced(c: LocalCluster, policies: set[str], nodes: tuple[str, ...]) -> None:
    """Until these nodes' agents hold exactly ``policies`` (names in namespace np)."""

    def ok() -> bool:
        for node in nodes:
            have = {p["name"] for p in c.table(node)["network_policy"]["policies"]}
            if {n for n in have if n.startswith(f"{NS}/")} != {f"{NS}/{p}" for p in policies}:
                return False
        return True

    wait_until(ok, 30, what=f"policies {sorted(policies)} on {', '.join(nodes)}", interval_s=0.2)


def delete_policies(c: LocalCluster) -> None:
    c.knemu("delete", "networkpolicies", "--all", "-n", NS)
    wait_enforced(c, set(), ("node-1", "node-2", "node-3"))


def test_default_deny_then_allow_by_label_across_nodes(cluster: LocalCluster) -> None:
    c, url = cluster, f"http://{web_ip(cluster)}/"
    assert answered(c, "frontend", url) and answered(c, "stranger", url)
    table = c.table("node-2")["network_policy"]
    assert table["enforced"] and not table["active"]
    try:
        apply_example(c, "default-deny-ingress.yaml")
        wait_enforced(c, {"default-deny-ingress"}, ("node-2",))
        assert_times_out(c, "frontend", url)
        flows = c.knemu("flows", "node-2", "--ip", web_ip(c)).stdout
        assert re.search(r"node-2 +decap +DROPPED +TCP 10\.244\.1\.\d+:\d+ -> .*:80 .*"
                         r"reason=policy_denied", flows), flows  # fmt: skip
        trace = c.knemu("trace", "-n", NS, "frontend", "pod/web", "--port", "80").stdout
        assert re.search(r"node-2 +decap +DROPPED .*reason=policy_denied", trace), trace
        isolated = {p["pod"] for p in c.table("node-2")["network_policy"]["isolated_pods"]}
        assert f"{NS}/web" in isolated
        apply_example(c, "allow-sample-app-from-frontend.yaml")
        wait_enforced(c, {"default-deny-ingress", "allow-sample-app-from-frontend"}, ("node-2",))
        assert answered(c, "frontend", url)
        # Through the ClusterIP too: judged after DNAT, on the target port 80 (not 8080).
        assert answered(c, "frontend", f"http://web.{NS}.svc.cluster.local:8080/")
        assert_times_out(c, "stranger", url)
        connections = c.table("node-2")["network_policy"]["connections"]
        assert any(e["dport"] == 80 and e["protocol"] == "TCP" for e in connections)
    finally:
        delete_policies(c)


def test_namespace_selector_and_pod_selector_in_one_peer(cluster: LocalCluster) -> None:
    c, url = cluster, f"http://{web_ip(cluster)}/"
    try:
        apply_example(c, "default-deny-ingress.yaml")
        apply_example(c, "allow-sample-app-from-frontend.yaml")
        wait_enforced(c, {"default-deny-ingress", "allow-sample-app-from-frontend"}, ("node-2",))
        # role=frontend, but in another namespace: a podSelector peer is namespace-scoped.
        assert_times_out(c, "outsider", url, namespace=OTHER_NS)
        apply_example(c, "allow-sample-app-from-frontend-team.yaml")
        wait_enforced(c, {"default-deny-ingress", "allow-sample-app-from-frontend",
                          "allow-sample-app-from-frontend-team"}, ("node-2",))  # fmt: skip
        assert answered(c, "outsider", url, namespace=OTHER_NS)
        assert answered(c, "frontend", url)
        assert_times_out(c, "stranger", url)
    finally:
        delete_policies(c)


def dig(c: LocalCluster, pod: str) -> subprocess.CompletedProcess[str]:
    return c.exec(pod, f"dig +short +time=1 +tries=1 web.{NS}.svc.cluster.local", namespace=NS)


def test_egress_deny_then_allow_dns(cluster: LocalCluster) -> None:
    c, url = cluster, f"http://{web_ip(cluster)}/"
    svc_ip = c.service("web", NS)["spec"]["clusterIP"]
    assert dig(c, "stranger").stdout.split() == [svc_ip]
    try:
        apply_example(c, "stranger-deny-egress.yaml")
        wait_enforced(c, {"stranger-deny-egress"}, ("node-3",))
        start = time.monotonic()
        out = dig(c, "stranger")
        assert svc_ip not in out.stdout and time.monotonic() - start >= 0.9, out.stdout
        assert_times_out(c, "stranger", url)
        assert answered(c, "frontend", url), "only role=stranger is isolated"
        apply_example(c, "stranger-allow-dns.yaml")
        wait_enforced(c, {"stranger-deny-egress", "stranger-allow-dns"}, ("node-3",))
        assert dig(c, "stranger").stdout.split() == [svc_ip]  # UDP 53 to kube-dns
        tcp = c.exec("stranger", f"dig +tcp +short +time=1 +tries=1 web.{NS}.svc.cluster.local",
                     namespace=NS)  # fmt: skip
        assert tcp.stdout.split() == [svc_ip]
        assert_times_out(c, "stranger", url)  # DNS only
        drops = c.knemu("flows", "node-3", "--ip", web_ip(c)).stdout
        assert re.search(r"node-3 +from-pod +DROPPED .*reason=policy_denied", drops), drops
    finally:
        delete_policies(c)


def test_deleting_the_policies_restores_traffic(cluster: LocalCluster) -> None:
    c, url = cluster, f"http://{web_ip(cluster)}/"
    try:
        for name in ("default-deny-ingress.yaml", "stranger-deny-egress.yaml"):
            apply_example(c, name)
        wait_enforced(c, {"default-deny-ingress", "stranger-deny-egress"},
                      ("node-1", "node-2", "node-3"))  # fmt: skip
        assert_times_out(c, "frontend", url)
        assert c.table("node-2")["network_policy"]["active"]
    finally:
        delete_policies(c)
    assert answered(c, "frontend", url) and answered(c, "stranger", url)
    for node in ("node-1", "node-2", "node-3"):
        table = c.table(node)["network_policy"]
        assert not table["active"] and table["isolated_pods"] == [], (node, table)
