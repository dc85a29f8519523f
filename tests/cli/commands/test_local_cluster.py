"""End to end on a real 3-node local cluster (`knemu up`): seed 003 and the data-plane promises.

One cluster per module (bringing one up takes seconds); every test uses its own objects.  All
traffic stays inside the namespaces the cluster made.  The fixture always runs `knemu down`
and then checks that nothing of the cluster is left.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from localcluster import FROM, REPO, LocalCluster, local_cluster, tools_pod, wait_backends

from knemu.node_agent.runtime.sandbox import netns_name
from knemu.testing import wait_until

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("knemu-state")) as c:
        for n in range(1, c.nodes + 1):
            c.apply(tools_pod(f"tools-{n}", f"node-{n}"))
        c.apply_file("examples/sample-deployment.yaml")
        c.apply_file("examples/sample-clusterip.yaml")
        c.wait_ready(c.nodes, selector="role=tools")
        c.wait_ready(3, selector="app=sample-app")
        yield c


def pod_ip(c: LocalCluster, name: str) -> str:
    return str(c.get(f"/api/v1/namespaces/default/pods/{name}")["status"]["podIP"])


def curl_many(c: LocalCluster, pod: str, url: str, times: int) -> list[tuple[str, str]]:
    out = c.exec(pod, f"for i in $(seq {times}); do curl -s -m 5 {url}; echo; done")
    assert out.returncode == 0, out.stderr
    return FROM.findall(out.stdout)


def test_seed_003_clusterip_balances_over_all_replicas_and_keeps_client_ip(
    cluster: LocalCluster,
) -> None:
    svc = cluster.service("sample-clusterip")
    wait_backends(cluster, "default/sample-clusterip", 3)
    replies = curl_many(cluster, "tools-1", f"http://{svc['spec']['clusterIP']}:8080", 30)
    assert len(replies) == 30
    replicas = {p["metadata"]["name"] for p in cluster.pods(selector="app=sample-app")}
    assert {frm for frm, _ in replies} == replicas
    assert {ip for _, ip in replies} == {pod_ip(cluster, "tools-1")}


def test_a_process_on_a_node_reaches_services_through_the_host_tun(cluster: LocalCluster) -> None:
    ip = cluster.service("sample-clusterip")["spec"]["clusterIP"]
    out = subprocess.run(
        ["ip", "netns", "exec", cluster.node_ns(2), "curl", "-s", "-m", "5",
         f"http://{ip}:8080/"],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    match = FROM.search(out.stdout)
    # The node's kernel routes 10.96.0.0/12 into knemu0, whose address is the source.
    assert match is not None and match.group(2) == "10.244.2.1", out.stdout + out.stderr


def test_pod_dns_goes_through_the_node_local_forwarder(cluster: LocalCluster) -> None:
    ip = cluster.service("sample-clusterip")["spec"]["clusterIP"]
    name = "sample-clusterip.default.svc.cluster.local"
    out = cluster.exec("tools-3", f"dig +short +time=3 +tries=1 {name}; "
                       f"dig +tcp +short +time=3 +tries=1 {name}; "
                       "curl -s -m 5 http://sample-clusterip:8080/")  # fmt: skip
    lines = out.stdout.splitlines()
    assert lines[:2] == [ip, ip], out.stdout + out.stderr  # UDP, then TCP (RFC 7766)
    assert FROM.search(out.stdout), "the search path resolves the short service name"


def test_pod_to_pod_on_the_same_node_and_across_nodes(cluster: LocalCluster) -> None:
    seen = set()
    for pod in cluster.pods(selector="app=sample-app"):
        node = int(pod["spec"]["nodeName"].split("-")[1])
        for client in (node, node % cluster.nodes + 1):  # same node, then another node
            replies = curl_many(cluster, f"tools-{client}", f"http://{pod['status']['podIP']}/", 1)
            assert replies == [(pod["metadata"]["name"], pod_ip(cluster, f"tools-{client}"))]
            seen.add(client == node)
    assert seen == {True, False}


def test_ping_across_nodes(cluster: LocalCluster) -> None:
    # No ping binary here: a raw-socket ICMP echo (RFC 792) run inside the pod.
    script = REPO / "tests" / "cli" / "commands" / "icmp_echo.py"
    target = pod_ip(cluster, "tools-3")
    out = cluster.exec("tools-1", f"python3 {script} {target}")
    assert out.returncode == 0, out.stdout + out.stderr
    ttl = int(re.search(r"ttl=(\d+)", out.stdout).group(1))  # type: ignore[union-attr]
    assert ttl == 62  # one router hop on each node


def test_named_target_port_reaches_pods_on_80_and_81(cluster: LocalCluster) -> None:
    cluster.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: named\n")
    for f in ("sample-named-port-pods.yaml", "sample-named-port-service.yaml"):
        cluster.apply((REPO / "examples" / f).read_text(), namespace="named")
    cluster.apply(tools_pod("tools", "node-2"), namespace="named")
    cluster.wait_ready(3, namespace="named")
    wait_backends(cluster, "named/sample-named-port-service", 2)
    ip = cluster.service("sample-named-port-service", "named")["spec"]["clusterIP"]
    out = cluster.exec("tools", f"for i in $(seq 20); do curl -s -m 5 http://{ip}:8080; echo; done",
                       namespace="named")  # fmt: skip
    assert {frm for frm, _ in FROM.findall(out.stdout)} == {
        "sample-named-port-pod-80", "sample-named-port-pod-81"}  # fmt: skip


def test_node_port_from_the_underlay(cluster: LocalCluster) -> None:
    cluster.apply(SERVICE.format(name="np", type="NodePort", affinity="None", proto="TCP"))
    wait_backends(cluster, "default/np", 3)
    node_port = cluster.service("np")["spec"]["ports"][0]["nodePort"]

    def answered() -> bool:
        out = subprocess.run(
            ["ip", "netns", "exec", cluster.node_ns(1), "curl", "-s", "-m", "5",
             f"http://{cluster.node_ip(2)}:{node_port}/"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        match = FROM.search(out.stdout)
        # kube-proxy userspace style: the backend sees node-2's gateway as the client.
        return match is not None and match.group(2) == "10.244.2.1"

    wait_until(answered, 30, what="an answer on node-2's NodePort", interval_s=0.2)


def test_udp_node_port_from_the_underlay(cluster: LocalCluster) -> None:
    cluster.apply(SERVICE.format(name="npu", type="NodePort", affinity="None", proto="UDP"))
    wait_backends(cluster, "default/npu", 3)
    node_port = cluster.service("npu")["spec"]["ports"][0]["nodePort"]

    def answered() -> bool:
        out = subprocess.run(
            ["ip", "netns", "exec", cluster.node_ns(3), "socat", "-T", "2", "-",
             f"UDP:{cluster.node_ip(1)}:{node_port}"],
            input="hello\n", capture_output=True, text=True, check=False, timeout=30,
        )  # fmt: skip
        match = FROM.search(out.stdout)
        return match is not None and match.group(2) == "10.244.1.1"

    wait_until(answered, 30, what="a UDP answer on node-1's NodePort", interval_s=0.2)


def test_service_without_endpoints_refuses_at_once(cluster: LocalCluster) -> None:
    cluster.apply(SERVICE.format(name="empty", type="ClusterIP", affinity="None", proto="TCP")
                  .replace("app: sample-app", "app: nobody"))  # fmt: skip
    ip = cluster.service("empty")["spec"]["clusterIP"]
    wait_until(
        lambda: any(s["key"] == "default/empty" for s in cluster.table("node-1")["services"]),
        30,
        what="service default/empty on node-1",
    )
    out = cluster.exec("tools-1", f"curl -s -m 10 -o /dev/null -w '%{{time_total}}' "
                       f"http://{ip}:8080/; echo ' rc='$?")  # fmt: skip
    took, rc = out.stdout.split()
    assert rc == "rc=7", out.stdout  # curl: "Failed to connect" (a RST), not 28 (timeout)
    assert float(took) < 1.0


def test_client_ip_affinity_pins_one_pod(cluster: LocalCluster) -> None:
    cluster.apply(SERVICE.format(name="sticky", type="ClusterIP", affinity="ClientIP", proto="TCP"))
    wait_backends(cluster, "default/sticky", 3)
    ip = cluster.service("sticky")["spec"]["clusterIP"]
    replies = curl_many(cluster, "tools-2", f"http://{ip}:8080/", 15)
    assert len(replies) == 15 and len({frm for frm, _ in replies}) == 1


def test_udp_service(cluster: LocalCluster) -> None:
    cluster.apply(SERVICE.format(name="udp", type="ClusterIP", affinity="None", proto="UDP"))
    wait_backends(cluster, "default/udp", 3)
    ip = cluster.service("udp")["spec"]["clusterIP"]
    out = cluster.exec("tools-3", f"echo hello | socat -T 3 - UDP:{ip}:8080")
    replies = FROM.findall(out.stdout)
    assert len(replies) == 1 and replies[0][1] == pod_ip(cluster, "tools-3")


def test_deleting_a_pod_and_a_service_updates_every_node(cluster: LocalCluster) -> None:
    for name, node in (("doomed-a", "node-1"), ("doomed-b", "node-2")):
        cluster.apply(ECHO_POD.format(name=name, node=node))
    cluster.apply(SERVICE.format(name="doomed", type="ClusterIP", affinity="None", proto="TCP")
                  .replace("app: sample-app", "app: doomed"))  # fmt: skip
    cluster.wait_ready(2, selector="app=doomed")
    wait_backends(cluster, "default/doomed", 2)
    victim_ip = pod_ip(cluster, "doomed-a")
    cluster.knemu("delete", "pod", "doomed-a")

    def backends() -> list[set[str]]:
        out = []
        for node in cluster.node_names():
            svcs = [s for s in cluster.table(node)["services"] if s["key"] == "default/doomed"]
            out.append({b["ip"] for s in svcs for p in s["ports"] for b in p["backends"]})
        return out

    wait_until(lambda: all(ips == {pod_ip(cluster, "doomed-b")} for ips in backends()), 60,
         what=f"backend {victim_ip} removed on every node", interval_s=0.2)  # fmt: skip
    cluster.knemu("delete", "service", "doomed")
    wait_until(
        lambda: backends() == [set()] * cluster.nodes, 60, what="service removed on every node"
    )
    assert all(
        all(s["key"] != "default/doomed" for s in cluster.table(n)["services"])
        for n in cluster.node_names()
    )
    cluster.knemu("delete", "pod", "doomed-b")


def test_trace_and_flows_follow_a_probe_across_nodes(cluster: LocalCluster) -> None:
    target = next(p for p in cluster.pods(selector="app=sample-app")
                  if p["spec"]["nodeName"] != "node-1")  # fmt: skip
    out = cluster.knemu("trace", "tools-1", f"pod/{target['metadata']['name']}", "--port", "80")
    node = target["spec"]["nodeName"]
    # The probe leaves node-1 encapsulated and is delivered to the pod on its node; the
    # reply comes back the same way.
    assert re.search(r"node-1 +encap +FORWARDED +TCP 10\.244\.1\.\d+:\d+ -> ", out.stdout)
    assert re.search(rf"{node} +to-pod +FORWARDED", out.stdout), out.stdout
    assert re.search(rf"{node} +encap .* -> 10\.244\.1\.", out.stdout), out.stdout
    icmp = cluster.knemu("trace", "tools-1", target["status"]["podIP"], "--protocol", "ICMP")
    assert re.search(rf"{node} +to-pod +FORWARDED +ICMP", icmp.stdout), icmp.stdout
    assert re.search(r"node-1 +to-pod +FORWARDED +ICMP", icmp.stdout), "the echo reply"
    with cluster.open("/api/v1/nodes/node-1/proxy/metrics") as r:
        metrics = r.read().decode()
    assert 'knemu_router_packets_total{node="node-1",action="encapsulated"}' in metrics
    flows = cluster.knemu("flows", "node-1", "--ip", pod_ip(cluster, "tools-1"))
    assert re.search(r"node-1 +encap +FORWARDED", flows.stdout), flows.stdout


ECHO_POD = """apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    app: doomed
spec:
  nodeName: {node}
  containers:
  - name: echo
    image: amsy810/echo-nginx:v2.0
"""


def test_data_plane_keeps_forwarding_while_the_apiserver_is_away(cluster: LocalCluster) -> None:
    ip = cluster.service("sample-clusterip")["spec"]["clusterIP"]
    uid = cluster.get("/api/v1/namespaces/default/pods/tools-2")["metadata"]["uid"]
    pod_ns = netns_name(f"knemu-{cluster.name}", "node-2", uid)
    state = json.loads((cluster.state_root / f"cluster-{cluster.name}" / "state.json").read_text())
    apiserver = state["pids"]["apiserver"]
    os.kill(apiserver, signal.SIGSTOP)  # frozen: no watch events, no leases, no REST
    try:
        out = subprocess.run(
            ["ip", "netns", "exec", pod_ns, "sh", "-c",
             f"for i in 1 2 3 4 5; do curl -s -m 5 http://{ip}:8080; echo; done"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        os.kill(apiserver, signal.SIGCONT)
    assert len(FROM.findall(out.stdout)) == 5, out.stdout + out.stderr
    cluster.wait_ready(cluster.nodes, selector="role=tools")


def test_chaos_partition_between_two_nodes_then_heal(cluster: LocalCluster) -> None:
    """POST /chaos on node-1's agent (through the api-server's node proxy) cuts node-2 only."""
    by_node = {p["spec"]["nodeName"]: p for p in cluster.pods(selector="role=tools")}
    far = by_node["node-2"]["status"]["podIP"]
    near = by_node["node-3"]["status"]["podIP"]
    chaos = "/api/v1/nodes/node-1/proxy/chaos"
    body = json.dumps({"peer": "node-2", "partition": True}).encode()
    json_type = {"Content-Type": "application/json"}
    with cluster.open(chaos, data=body, method="POST", headers=json_type) as resp:
        assert resp.status == 201
    script = REPO / "tests" / "cli" / "commands" / "icmp_echo.py"
    try:
        assert cluster.exec("tools-1", f"python3 {script} {far}").returncode == 1
        assert cluster.exec("tools-1", f"python3 {script} {near}").returncode == 0
    finally:
        with cluster.open(chaos + "?peer=node-2", method="DELETE") as resp:
            assert json.loads(resp.read())["removed"] == 1
    assert cluster.exec("tools-1", f"python3 {script} {far}").returncode == 0
    # A delay is applied with loop.call_at, never by sleeping: the echo takes >= 150 ms.
    body = json.dumps({"peer": "node-2", "delay_ms": 150, "direction": "egress"}).encode()
    cluster.open(chaos, data=body, method="POST", headers=json_type).close()
    try:
        out = cluster.exec("tools-1", f"python3 {script} {far}")
    finally:
        cluster.open(chaos, method="DELETE").close()
    rtt = float(re.search(r"time=([\d.]+)ms", out.stdout).group(1))  # type: ignore[union-attr]
    assert rtt >= 150, out.stdout


def test_node_killed_and_restarted_with_chaos_adopts_its_pods(cluster: LocalCluster) -> None:
    """`knemu chaos kill-node` (agent and pods SIGKILLed), then `restart`: node-1's pods come
    back with their IPs (the restarted agent adopts them) and are reachable again."""

    def on_node_1() -> dict[str, str]:
        pods = cluster.pods(selector="app=sample-app")
        return {p["metadata"]["name"]: p["status"]["podIP"]
                for p in pods if p["spec"]["nodeName"] == "node-1"}  # fmt: skip

    before = on_node_1()
    assert before, "the deployment has a replica on node-1"
    chaos = ("chaos", "--runtime", "local", "--cluster", cluster.name,
             "--state-dir", str(cluster.state_root))  # fmt: skip
    assert "killed" in cluster.knemu(*chaos, "kill-node", "node-1").stdout
    cluster.knemu(*chaos, "restart", "node-1")

    def all_reachable() -> bool:
        for name, ip in before.items():
            replies = FROM.findall(cluster.exec("tools-2", f"curl -s -m 2 http://{ip}/").stdout)
            if [frm for frm, _ in replies] != [name]:
                return False
        return True

    wait_until(
        all_reachable, 60, what="node-1's pods reachable after the agent restarted", interval_s=0.5
    )
    assert on_node_1() == before


SERVICE = """apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  type: {type}
  sessionAffinity: {affinity}
  selector:
    app: sample-app
  ports:
  - name: p
    protocol: {proto}
    port: 8080
    targetPort: 80
"""


@pytest.mark.parametrize("leftover", ["dead-pids", "namespace"])
def test_up_refuses_a_stale_cluster_and_down_cleans_it(tmp_path: Path, leftover: str) -> None:
    c = LocalCluster(tmp_path, nodes=1)
    state = tmp_path / f"cluster-{c.name}"
    try:
        if leftover == "dead-pids":
            state.mkdir()
            (state / "state.json").write_text('{"pids": {"apiserver": 999999999}, "complete": 1}')
        else:
            subprocess.run(["ip", "netns", "add", c.node_ns(1)], check=True)
        out = c.knemu("up", "--nodes", "1", "--name", c.name, "--subnet", c.subnet,
                      "--state-dir", str(tmp_path), check=False)  # fmt: skip
        assert out.returncode == 1
        assert "stale" in out.stderr and f"knemu down --name {c.name}" in out.stderr
    finally:
        down = c.down()
    assert down.returncode == 0 and "removed" in down.stdout and not state.exists()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert c.node_ns(1) not in listed


@pytest.mark.parametrize("mode", ["ipvs", "userspace"])
def test_proxy_mode_reaches_every_router(tmp_path: Path, mode: str) -> None:
    """`knemu up --proxy-mode M` (ipvs: scheduler rr; userspace: round robin): new
    connections cycle over the backends."""
    c = LocalCluster(tmp_path, nodes=2, proxy_mode=mode)
    try:
        c.up()
        c.apply(tools_pod("tools", "node-1"))
        c.apply_file("examples/sample-deployment.yaml")
        c.apply_file("examples/sample-clusterip.yaml")
        c.wait_ready(1, selector="role=tools")
        c.wait_ready(3, selector="app=sample-app")
        wait_backends(c, "default/sample-clusterip", 3)
        assert c.table("node-1")["proxy_mode"] == mode
        ip = c.service("sample-clusterip")["spec"]["clusterIP"]
        replies = [frm for frm, _ in curl_many(c, "tools", f"http://{ip}:8080", 9)]
        # Round robin: every backend exactly 3 times (uniform random would give 3/3/3 in
        # only 8.5% of runs).
        counts = sorted(replies.count(r) for r in set(replies))
        assert counts == [3, 3, 3], replies
    finally:
        c.down()
