"""The IP-in-IP backend (RFC 2003, Calico's IPIP mode) on a real 2-node local cluster.

Seed 003's scenario across nodes, the pod MTU (1480), the backend published on each Node,
tshark decoding the underlay traffic as IP-in-IP, and a Linux ``ipip`` tunnel configured as
Calico configures it (tunl0 + ``ip route ... via <node> dev tunl0 onlink``) as a working peer.
All traffic stays inside the namespaces the cluster and the test made.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from localcluster import FROM, REPO, LocalCluster, local_cluster, pod_script, tools_pod

from knemu.testing import wait_until

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("knemu-ipip"), nodes=2, backend="ipip") as c:
        c.apply(tools_pod("tools-1", "node-1"))
        c.apply_file("examples/sample-deployment.yaml")
        c.apply_file("examples/sample-clusterip.yaml")
        c.wait_ready(1, selector="role=tools")
        c.wait_ready(3, selector="app=sample-app")
        yield c


def remote_pod(c: LocalCluster) -> dict[str, object]:
    pods = [p for p in c.pods(selector="app=sample-app") if p["spec"]["nodeName"] == "node-2"]
    if not pods:
        pytest.skip("the scheduler put no sample-app replica on node-2")
    return pods[0]


def test_nodes_publish_their_backend(cluster: LocalCluster) -> None:
    for name in cluster.node_names():
        meta = cluster.get(f"/api/v1/nodes/{name}")["metadata"]
        assert meta["labels"]["knemu.dev/network-backend"] == "ipip"
        assert meta["annotations"]["flannel.alpha.coreos.com/backend-type"] == "ipip"
    table = cluster.table("node-1")
    assert table["backend"] == "ipip" and table["backend_mismatch"] == {}


def test_seed_003_over_ipip_and_pod_mtu_1480(cluster: LocalCluster) -> None:
    ip = cluster.service("sample-clusterip")["spec"]["clusterIP"]
    remote_pod(cluster)  # at least one reply must cross the tunnel

    def all_replicas() -> bool:
        out = cluster.exec("tools-1", f"for i in $(seq 20); do curl -s -m 5 http://{ip}:8080; "
                           "echo; done")  # fmt: skip
        names = {frm for frm, _ in FROM.findall(out.stdout)}
        return names == {p["metadata"]["name"] for p in cluster.pods(selector="app=sample-app")}

    wait_until(
        all_replicas, 60, what="curl to the ClusterIP reaches all 3 replicas", interval_s=0.5
    )
    out = cluster.exec("tools-1", "cat /sys/class/net/eth0/mtu")
    assert out.stdout.strip() == "1480"
    out = cluster.exec("tools-1", "curl -s -m 5 http://sample-clusterip:8080/")  # DNS too
    assert FROM.search(out.stdout), out.stdout + out.stderr


def test_tshark_decodes_the_underlay_as_ip_in_ip(cluster: LocalCluster, tmp_path: Path) -> None:
    target = str(remote_pod(cluster)["status"]["podIP"])
    pcap = tmp_path / "underlay.pcap"
    capture = subprocess.Popen(
        ["ip", "netns", "exec", cluster.node_ns(1), "tcpdump", "-i", "eth0", "-U", "-c", "6",
         "-w", str(pcap), "ip proto 4"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert capture.stderr is not None
        assert "listening on" in capture.stderr.readline()  # tcpdump's "ready" line
        for _ in range(10):
            cluster.exec("tools-1", f"curl -s -m 5 http://{target}/")
            if capture.poll() is not None:
                break
    finally:
        capture.terminate()
        capture.wait(10)
    fields = subprocess.run(
        ["tshark", "-r", str(pcap), "-T", "fields", "-E", "separator=|", "-e", "ip.proto",
         "-e", "ip.src", "-e", "ip.dst", "-e", "tcp.dstport"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.splitlines()  # fmt: skip
    # Two IPv4 layers per packet: outer node -> node (protocol 4), inner pod -> pod (TCP).
    outer_inner = [line.split("|") for line in fields]
    assert any(
        proto == "4,6"
        and src.split(",")[0] == cluster.node_ip(1)
        and dst == f"{cluster.node_ip(2)},{target}"
        and port == "80"
        for proto, src, dst, port in outer_inner
    ), fields


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)


PEER_CIDR = "10.244.200.0/24"
PEER_POD_IP = "10.244.200.1"  # tunl0's address, as Calico gives tunl0 one from its block


@pytest.fixture
def kernel_peer(cluster: LocalCluster) -> Iterator[tuple[str, str]]:
    """A namespace on the cluster's underlay with a Linux ipip tunnel set up as Calico's
    node does, and a Node object announcing it (podCIDR 10.244.200.0/24, backend ipip)."""
    ns = f"knemu-{cluster.name}-kpeer"
    peer_ip = cluster.node_ip(50)
    switch = f"knemu-{cluster.name}-sw"
    try:
        assert _ip("netns", "add", ns).returncode == 0
        if _ip("-n", ns, "link", "add", "probe0", "type", "ipip").returncode != 0:
            pytest.skip("this kernel has no ipip support (CONFIG_NET_IPIP): no kernel peer")
        _ip("-n", ns, "link", "del", "probe0")
        cmds = [
            ["-n", switch, "link", "add", "kp0", "type", "veth", "peer", "name", "eth0",
             "netns", ns],
            ["-n", switch, "link", "set", "kp0", "master", "br0", "up"],
            ["-n", ns, "link", "set", "lo", "up"],
            ["-n", ns, "addr", "add", f"{peer_ip}/24", "dev", "eth0"],
            ["-n", ns, "link", "set", "eth0", "up"],
            ["-n", ns, "link", "set", "tunl0", "mtu", "1480", "up"],
            ["-n", ns, "addr", "add", f"{PEER_POD_IP}/32", "dev", "tunl0"],
        ]  # fmt: skip
        for n in range(1, cluster.nodes + 1):
            cmds.append(["-n", ns, "route", "add", f"10.244.{n}.0/24", "via", cluster.node_ip(n),
                         "dev", "tunl0", "onlink", "src", PEER_POD_IP])  # fmt: skip
        for cmd in cmds:
            out = _ip(*cmd)
            assert out.returncode == 0, f"ip {' '.join(cmd)}: {out.stderr}"
        node = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "kernel-peer", "annotations": {
                "flannel.alpha.coreos.com/backend-type": "ipip",
                "flannel.alpha.coreos.com/backend-data":
                    '{"VNI":1,"VtepMAC":"02:00:00:00:00:50"}'}},
            "spec": {"podCIDR": PEER_CIDR, "podCIDRs": [PEER_CIDR], "unschedulable": True},
            "status": {"addresses": [{"type": "InternalIP", "address": peer_ip}]},
        }  # fmt: skip
        cluster.apply(json.dumps(node))
        yield ns, peer_ip
    finally:
        cluster.knemu("delete", "node", "kernel-peer", check=False)
        _ip("-n", switch, "link", "del", "kp0")
        _ip("netns", "del", ns)


def test_a_linux_ipip_tunnel_is_a_working_peer(
    cluster: LocalCluster, kernel_peer: tuple[str, str]
) -> None:
    ns, _ = kernel_peer
    target = str(remote_pod(cluster)["status"]["podIP"])
    echo = REPO / "tests" / "cli" / "commands" / "icmp_echo.py"

    def peer_reaches_pod() -> bool:
        out = subprocess.run(["ip", "netns", "exec", ns, "curl", "-s", "-m", "3",
                              f"http://{target}/"], capture_output=True, text=True,
                             check=False, timeout=30)  # fmt: skip
        match = FROM.search(out.stdout)
        return match is not None and match.group(2) == PEER_POD_IP

    wait_until(peer_reaches_pod, 30, what="TCP from the kernel ipip peer to a pod", interval_s=0.5)
    ping = subprocess.run(["ip", "netns", "exec", ns, "python3", str(echo), target],
                          capture_output=True, text=True, check=False, timeout=30)  # fmt: skip
    assert ping.returncode == 0, ping.stdout + ping.stderr
    # And the other way: a pod opens TCP to a server on the peer's tunl0 address, and pings it.
    server = subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-m", "http.server",
                               "--bind", PEER_POD_IP, "8099"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        out = cluster.exec("tools-1", f"for i in $(seq 20); do curl -s -m 3 -o /dev/null -w "
                           f"'%{{http_code}}\\n' http://{PEER_POD_IP}:8099/ && break; "
                           "sleep 0.3; done")  # fmt: skip
        assert "200" in out.stdout, out.stdout + out.stderr
        ping = cluster.exec("tools-1", f"python3 {pod_script(echo)} {PEER_POD_IP}")
        assert ping.returncode == 0, ping.stdout + ping.stderr
    finally:
        server.terminate()
        server.wait(10)
