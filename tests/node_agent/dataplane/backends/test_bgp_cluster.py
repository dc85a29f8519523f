"""The BGP backend (native routing, BIRD on every node as Calico's node runs it) on a real
2-node local cluster: sessions and learned routes, seed 003 across nodes with plain pod-to-pod
IP on the underlay (tshark), and a killed node's route withdrawn (the figure is printed).
All traffic stays inside the namespaces the cluster made."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from localcluster import FROM, LocalCluster, local_cluster, tools_pod

from knemu.testing import wait_until

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(shutil.which("bird") is None, reason="BIRD 2 not installed (bird2)"),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("knemu-bgp"), nodes=2, backend="bgp") as c:
        c.apply(tools_pod("tools-1", "node-1"))
        c.apply_file("examples/sample-deployment.yaml")
        c.apply_file("examples/sample-clusterip.yaml")
        c.wait_ready(1, selector="role=tools")
        c.wait_ready(3, selector="app=sample-app")
        yield c


def learned(c: LocalCluster, node: str) -> dict[str, str]:
    return {r["prefix"]: r["via"] for r in c.table(node).get("bgp", {}).get("routes", [])}


def test_sessions_established_and_pod_cidrs_learned_over_bgp(cluster: LocalCluster) -> None:
    seen: dict[str, object] = {}

    def mesh_up() -> bool:
        for n in ("node-1", "node-2"):
            seen[n] = sessions = cluster.table(n)["bgp"]["sessions"]
            if [s["info"].split()[:1] for s in sessions] != [["Established"]]:
                return False
        return True

    try:
        wait_until(mesh_up, 60, what="BGP sessions Established on both nodes", interval_s=0.5)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}: {seen}") from None
    wait_until(lambda: learned(cluster, "node-1") == {"10.244.2.0/24": cluster.node_ip(2)}, 15,
               what="node-1 learns node-2's podCIDR over BGP")  # fmt: skip
    status = cluster.knemu("bgp", "node-1").stdout
    assert re.search(rf"{cluster.node_ip(2)}\s+node-to-node mesh\s+up\s+.*Established", status)
    assert f"10.244.2.0/24        {cluster.node_ip(2)}" in status, status
    kernel = subprocess.run(["ip", "-n", cluster.node_ns(1), "route", "show", "proto", "bird"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert f"10.244.2.0/24 via {cluster.node_ip(2)}" in kernel


def test_seed_003_with_plain_pod_ip_on_the_underlay(cluster: LocalCluster, tmp_path: Path) -> None:
    remote = [p for p in cluster.pods(selector="app=sample-app")
              if p["spec"]["nodeName"] == "node-2"]  # fmt: skip
    if not remote:
        pytest.skip("the scheduler put no sample-app replica on node-2")
    target = remote[0]["status"]["podIP"]
    ip = cluster.service("sample-clusterip")["spec"]["clusterIP"]
    pcap = tmp_path / "underlay.pcap"
    capture = subprocess.Popen(
        ["ip", "netns", "exec", cluster.node_ns(1), "tcpdump", "-i", "eth0", "-U", "-c", "6",
         "-w", str(pcap), f"tcp and host {target}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert capture.stderr is not None
        assert "listening on" in capture.stderr.readline()
        out = cluster.exec("tools-1", f"curl -s -m 5 http://{target}/")
        assert FROM.search(out.stdout), out.stdout + out.stderr
        wait_until(
            lambda: capture.poll() is not None, 10, what="6 packets captured", interval_s=0.2
        )
    finally:
        capture.terminate()
        capture.wait(10)
    fields = subprocess.run(
        ["tshark", "-r", str(pcap), "-T", "fields", "-E", "separator=|", "-e", "ip.proto",
         "-e", "ip.src", "-e", "ip.dst"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.splitlines()  # fmt: skip
    tools_ip = cluster.get("/api/v1/namespaces/default/pods/tools-1")["status"]["podIP"]
    # One IPv4 layer, pod to pod, TCP: no encapsulation between the nodes.
    assert f"6|{tools_ip}|{target}" in fields, fields
    replies = cluster.exec("tools-1", f"for i in $(seq 20); do curl -s -m 5 http://{ip}:8080; "
                           "echo; done")  # fmt: skip
    names = {frm for frm, _ in FROM.findall(replies.stdout)}
    assert names == {p["metadata"]["name"] for p in cluster.pods(selector="app=sample-app")}


def chaos(c: LocalCluster, *args: str) -> None:
    c.knemu("chaos", "--runtime", "local", "--cluster", c.name, "--state-dir",
            str(c.state_root), *args)  # fmt: skip


def established(c: LocalCluster, node: str) -> bool:
    sessions = c.table(node).get("bgp", {}).get("sessions", [])
    return bool(sessions) and all(s["info"].startswith("Established") for s in sessions)


def test_a_partition_takes_sessions_down_and_healing_brings_them_back(
    cluster: LocalCluster,
) -> None:
    """`knemu chaos partition` on a bgp node cuts BGP and pod traffic in the node's kernel
    (nftables): the sessions go down when the hold timer (9 s) expires, the routes are
    withdrawn, pods across the cut do not answer; `heal` brings all back.  Figures printed."""

    def up() -> bool:
        return established(cluster, "node-1") and "10.244.2.0/24" in learned(cluster, "node-1")

    wait_until(up, 60, what="node-1's session up, route learned")
    start = time.monotonic()
    chaos(cluster, "partition", "node-1")
    wait_until(lambda: "10.244.2.0/24" not in learned(cluster, "node-1"), 30,
               what="node-2's podCIDR withdrawn on node-1", interval_s=0.2)  # fmt: skip
    down = time.monotonic() - start
    assert not established(cluster, "node-1")
    status = cluster.knemu("bgp", "node-1").stdout
    assert "Established" not in status, status
    out = cluster.exec("tools-1", "curl -s -m 3 http://10.244.2.1/ || echo unreachable")
    assert "unreachable" in out.stdout
    start = time.monotonic()
    chaos(cluster, "heal", "node-1")
    wait_until(up, 60, what="session and route back after heal", interval_s=0.2)
    print(f"\nBGP partition: routes withdrawn {down:.1f} s after the cut (hold time 9 s), "
          f"back {time.monotonic() - start:.1f} s after heal")  # fmt: skip
    assert 4 <= down <= 20  # hold time after the last keepalive (every ~3 s) before the cut


def test_a_restarted_node_re_announces(cluster: LocalCluster) -> None:
    wait_until(lambda: "10.244.2.0/24" in learned(cluster, "node-1"), 60, what="route learned")
    start = time.monotonic()
    chaos(cluster, "restart", "node-2")
    wait_until(lambda: "10.244.2.0/24" not in learned(cluster, "node-1"), 30,
               what="node-2's route gone while it restarts", interval_s=0.1)  # fmt: skip
    gone = time.monotonic() - start
    wait_until(lambda: "10.244.2.0/24" in learned(cluster, "node-1"), 90,
               what="node-2 re-announces after its restart", interval_s=0.2)  # fmt: skip
    print(f"\nBGP restart: route gone after {gone:.2f} s, re-announced "
          f"{time.monotonic() - start:.1f} s after `knemu chaos restart node-2`")  # fmt: skip


def test_a_killed_nodes_route_is_withdrawn(cluster: LocalCluster) -> None:
    wait_until(
        lambda: "10.244.2.0/24" in learned(cluster, "node-1"), 30, what="route to node-2 learned"
    )
    start = time.monotonic()
    cluster.knemu("chaos", "--runtime", "local", "--cluster", cluster.name, "--state-dir",
                  str(cluster.state_root), "kill-node", "node-2")  # fmt: skip
    wait_until(lambda: "10.244.2.0/24" not in learned(cluster, "node-1"), 30,
               what="node-2's podCIDR withdrawn on node-1", interval_s=0.1)  # fmt: skip
    print(f"\nBGP: killed node's route withdrawn after {time.monotonic() - start:.2f} s "
          "(its speaker dies with the agent: the kernel closes the session; a silent node "
          "goes at the 9 s hold time)")  # fmt: skip
    out = cluster.exec("tools-1", "curl -s -m 3 http://10.244.2.1/ || echo unreachable")
    assert "unreachable" in out.stdout
    drops = cluster.table("node-1")["counters"]
    assert drops.get("drop_no_route", 0) >= 1, drops
