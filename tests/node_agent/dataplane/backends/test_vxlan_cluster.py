"""The VXLAN backend (RFC 7348, flannel's vxlan) on a real 2-node local cluster, with a Linux
``vxlan`` device configured as flannel configures it as a third node.

The kernel peer keeps the kernel's default offloads, so the inner TCP/UDP checksums it sends
are left partial (CHECKSUM_PARTIAL across the veth underlay): ICMP, TCP bulk and UDP must work
both ways anyway, the receiving agent counting the checksums it completed.  tshark then checks
the wire: outer source ports per flow in 49152-65535, DF clear, the VNI and VTEP MACs.  All
traffic stays inside the namespaces the cluster and the test made.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from localcluster import REPO, LocalCluster, local_cluster, tools_pod

from knemu.testing import wait_until

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(600)]

PEER_CIDR = "10.244.200.0/24"
PEER_IP = "10.244.200.0"  # flannel.1's address: flannel gives the VTEP the subnet's .0/32
PEER_MAC = "02:00:00:00:00:c8"
UNDERLAY_MTU = 9000  # jumbo frames (`knemu up --mtu 9000`): pods get 8950
ECHO_UDP = REPO / "tests" / "node_agent" / "dataplane" / "backends" / "udp_echo.py"
ECHO_ICMP = REPO / "tests" / "cli" / "commands" / "icmp_echo.py"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    # pods' TUNs with offloads: the kernel peer is also checked against TSO/GRO (the path
    # without them is the same code minus the offload steps)
    with local_cluster(
        tmp_path_factory.mktemp("knemu-vxlan"), nodes=2, mtu=UNDERLAY_MTU, tun_offload=True
    ) as c:
        c.apply(tools_pod("tools-1", "node-1"))
        c.wait_ready(1, selector="role=tools")
        yield c


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)


def _in_peer(ns: str, *argv: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                          check=False, timeout=timeout_s)  # fmt: skip


def _vtep_mac(c: LocalCluster, node: str) -> str:
    meta = c.get(f"/api/v1/nodes/{node}")["metadata"]
    mac: str = json.loads(meta["annotations"]["flannel.alpha.coreos.com/backend-data"])["VtepMAC"]
    return mac


@pytest.fixture(scope="module")
def kernel_peer(cluster: LocalCluster) -> Iterator[str]:
    """A namespace on the cluster's underlay whose ``flannel.1`` is set up as flannel's
    vxlan backend does (nolearning; per node a route via its .0 onlink, a permanent neighbour
    entry and an FDB entry), default offloads, and a Node object announcing it."""
    ns = f"knemu-{cluster.name}-kvx"
    switch = f"knemu-{cluster.name}-sw"
    peer_ip = cluster.node_ip(50)
    try:
        assert _ip("netns", "add", ns).returncode == 0
        cmds = [
            ["-n", switch, "link", "add", "kvx0", "type", "veth", "peer", "name", "eth0",
             "netns", ns],
            ["-n", switch, "link", "set", "kvx0", "master", "br0", "up"],
            ["-n", ns, "link", "set", "lo", "up"],
            ["-n", ns, "addr", "add", f"{peer_ip}/24", "dev", "eth0"],
            ["-n", ns, "link", "set", "eth0", "mtu", str(UNDERLAY_MTU), "up"],
            ["-n", switch, "link", "set", "kvx0", "mtu", str(UNDERLAY_MTU)],
            ["-n", ns, "link", "add", "flannel.1", "address", PEER_MAC, "type", "vxlan", "id",
             "1", "local", peer_ip, "dev", "eth0", "dstport", "4789", "nolearning"],
            ["-n", ns, "link", "set", "flannel.1", "mtu", str(UNDERLAY_MTU - 50), "up"],
            ["-n", ns, "addr", "add", f"{PEER_IP}/32", "dev", "flannel.1"],
        ]  # fmt: skip
        for n in range(1, cluster.nodes + 1):
            gw, mac = f"10.244.{n}.0", _vtep_mac(cluster, f"node-{n}")
            cmds += [
                ["-n", ns, "route", "add", f"10.244.{n}.0/24", "via", gw, "dev", "flannel.1",
                 "onlink", "src", PEER_IP],
                ["-n", ns, "neigh", "add", gw, "lladdr", mac, "dev", "flannel.1", "nud",
                 "permanent"],
            ]  # fmt: skip
        for cmd in cmds:
            out = _ip(*cmd)
            assert out.returncode == 0, f"ip {' '.join(cmd)}: {out.stderr}"
        for n in range(1, cluster.nodes + 1):
            fdb = ["bridge", "-n", ns, "fdb", "append", _vtep_mac(cluster, f"node-{n}"), "dev",
                   "flannel.1", "dst", cluster.node_ip(n)]  # fmt: skip
            out = subprocess.run(fdb, capture_output=True, text=True, check=False, timeout=30)
            assert out.returncode == 0, f"{' '.join(fdb)}: {out.stderr}"
        node = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "kernel-peer", "annotations": {
                "flannel.alpha.coreos.com/backend-type": "vxlan",
                "flannel.alpha.coreos.com/backend-data": json.dumps(
                    {"VNI": 1, "VtepMAC": PEER_MAC})}},
            "spec": {"podCIDR": PEER_CIDR, "podCIDRs": [PEER_CIDR], "unschedulable": True},
        }  # fmt: skip
        cluster.apply(json.dumps(node))
        # apply leaves status out, as kubectl apply does: the address goes to the subresource
        status = {"status": {"addresses": [{"type": "InternalIP", "address": peer_ip}]}}
        patch = subprocess.run(["kubectl", "patch", "node", "kernel-peer", "--subresource=status",
                                "--type=merge", "-p", json.dumps(status)], capture_output=True,
                               text=True, check=False, timeout=60, env=cluster.env())  # fmt: skip
        assert patch.returncode == 0, patch.stdout + patch.stderr

        def routed() -> bool:
            return any(p["name"] == "kernel-peer" for p in cluster.table("node-1")["peers"])

        wait_until(routed, 30, what="node-1 routes to the kernel peer", interval_s=0.2)
        yield ns
    finally:
        cluster.knemu("delete", "node", "kernel-peer", check=False)
        _ip("-n", switch, "link", "del", "kvx0")
        _ip("netns", "del", ns)


def _super_packets(c: LocalCluster) -> int:
    return int(c.table("node-1")["counters"].get("offload_super_packets", 0))


def _completed(c: LocalCluster) -> int:
    return int(c.table("node-1")["counters"].get("inner_checksum_completed", 0))


def test_icmp_both_ways(cluster: LocalCluster, kernel_peer: str) -> None:
    pod_ip = str(cluster.pods(selector="role=tools")[0]["status"]["podIP"])

    def peer_pings_pod() -> bool:
        return _in_peer(kernel_peer, "python3", str(ECHO_ICMP), pod_ip).returncode == 0

    wait_until(peer_pings_pod, 30, what="ICMP echo from the kernel vxlan peer to a pod",
               interval_s=0.5)  # fmt: skip
    ping = cluster.exec("tools-1", f"python3 {ECHO_ICMP} {PEER_IP}")
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_pods_mtu_follows_the_jumbo_underlay(cluster: LocalCluster) -> None:
    out = cluster.exec("tools-1", "cat /sys/class/net/eth0/mtu")
    assert out.stdout.strip() == str(UNDERLAY_MTU - 50), out.stdout + out.stderr
    node_mtu = _ip("-n", cluster.node_ns(1), "-j", "link", "show", "eth0").stdout
    assert json.loads(node_mtu)[0]["mtu"] == UNDERLAY_MTU


@contextlib.contextmanager
def serving(ns: str, *argv: str, ready: str) -> Iterator[None]:
    """``argv`` running in the kernel peer's namespace once it printed ``ready``."""
    server = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        assert server.stdout is not None
        seen = ""
        while ready not in seen:
            line = server.stdout.readline()
            assert line, f"{argv[0]} ended before saying {ready!r}: {seen}"
            seen += line
        yield
    finally:
        server.kill()
        server.wait(10)


def iperf3(c: LocalCluster, port: int, *flags: str) -> int:
    """Bytes a bounded iperf3 run from tools-1 to the kernel peer moved."""
    out = c.exec("tools-1", f"iperf3 -c {PEER_IP} -p {port} -n 8M -J --connect-timeout 5000 "
                 + " ".join(flags), timeout_s=120)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return int(json.loads(out.stdout)["end"]["sum_received"]["bytes"])


def test_tcp_bulk_both_ways(cluster: LocalCluster, kernel_peer: str) -> None:
    before = _completed(cluster)
    iperf_server = ("iperf3", "-s", "--forceflush", "-B", PEER_IP, "--one-off", "-p")
    # -R: the kernel peer sends the bulk (partial inner checksums), the pod acknowledges it.
    # (Its vxlan device sends TSO bursts as UDP-tunnel GSO packets, which the kernel hands a
    # plain UDP socket unsegmented: node-1 reads inner super-packets already merged.)
    with serving(kernel_peer, *iperf_server, "5299", ready="listening"):
        assert iperf3(cluster, 5299, "-R") >= 4 << 20  # the last bytes may still be in flight
    # and the pod sends the bulk, the kernel acknowledging it with partial checksums; the
    # pod's TSO super-packets are routed once and cut into whole VXLAN frames for the kernel
    with serving(kernel_peer, *iperf_server, "5298", ready="listening"):
        sent = _super_packets(cluster)
        assert iperf3(cluster, 5298) >= 4 << 20
        assert _super_packets(cluster) > sent, cluster.table("node-1")["counters"]
    assert _completed(cluster) > before, cluster.table("node-1")["counters"]


def test_udp_both_ways(cluster: LocalCluster, kernel_peer: str) -> None:
    before = _completed(cluster)
    with serving(kernel_peer, "python3", str(ECHO_UDP), "serve", PEER_IP, "5297", "60",
                 ready="serving"):  # fmt: skip
        for size in (1200, 8000):  # 8000: a jumbo datagram, unfragmented at pod MTU 8950
            out = cluster.exec("tools-1", f"python3 {ECHO_UDP} ask {PEER_IP} 5297 50 {size}",
                               timeout_s=150)  # fmt: skip
            assert out.returncode == 0, out.stdout + out.stderr
    assert _completed(cluster) > before, cluster.table("node-1")["counters"]


def test_tshark_sees_rfc_7348_on_the_wire(
    cluster: LocalCluster, kernel_peer: str, tmp_path: Path
) -> None:
    """Four UDP flows pod -> kernel peer: each flow's datagrams keep one outer source port in
    49152-65535, the flows do not all share one, DF is clear, VNI 1, the VTEP MACs, and each
    datagram is one whole inner packet (+50 bytes) within the underlay MTU."""
    pcap = tmp_path / "underlay.pcap"
    capture = subprocess.Popen(
        ["ip", "netns", "exec", cluster.node_ns(1), "tcpdump", "-i", "eth0", "-U",
         "--immediate-mode", "-c", "40", "-w", str(pcap),
         f"udp dst port 4789 and dst host {cluster.node_ip(50)}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert capture.stderr is not None
        assert "listening on" in capture.stderr.readline()  # tcpdump's "ready" line
        with serving(kernel_peer, "python3", str(ECHO_UDP), "serve", PEER_IP, "5296", "60",
                     ready="serving"):  # fmt: skip
            for size in (100, 1000, 4000, 8900):  # four flows (client ports), up to pod MTU
                out = cluster.exec("tools-1", f"python3 {ECHO_UDP} ask {PEER_IP} 5296 10 {size}")
                assert out.returncode == 0, f"{size}: {out.stdout}{out.stderr}"
        with contextlib.suppress(subprocess.TimeoutExpired):
            capture.wait(20)  # until it has its 40 datagrams (4 flows x 10), if all came
    finally:
        capture.terminate()
        capture.wait(10)
    fields = subprocess.run(
        ["tshark", "-r", str(pcap), "-d", "udp.port==4789,vxlan", "-T", "fields", "-E",
         "separator=|", "-e", "udp.srcport", "-e", "ip.flags.df", "-e", "vxlan.vni", "-e",
         "eth.dst", "-e", "eth.src", "-e", "udp.checksum", "-e", "ip.len"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.splitlines()  # fmt: skip
    mac1 = _vtep_mac(cluster, "node-1")
    flows: dict[str, set[str]] = {}
    for line in fields:
        sports, dfs, vni, dst_macs, src_macs, csums, lengths = line.split("|")
        outer_len, inner_len = (int(n) for n in lengths.split(","))
        assert outer_len == inner_len + 50 <= UNDERLAY_MTU, line  # a whole frame per datagram
        outer_sport, inner_sport = sports.split(",")
        assert 49152 <= int(outer_sport) <= 65535, line
        assert dfs.split(",")[0] in ("0", "False"), line
        assert vni == "1" and dst_macs.split(",")[1] == PEER_MAC, line
        assert src_macs.split(",")[1] == mac1, line
        assert csums.split(",")[0] == "0x0000", line  # RFC 7348: SHOULD be zero over IPv4
        flows.setdefault(inner_sport, set()).add(outer_sport)
    assert len(flows) == 4, fields
    assert all(len(ports) == 1 for ports in flows.values()), flows
    assert len({p for ports in flows.values() for p in ports}) > 1, flows


def test_the_kernel_peer_resolves_the_vtep_by_arp(cluster: LocalCluster, kernel_peer: str) -> None:
    """Without its permanent neighbour entry for node-1's VTEP (10.244.1.0), the kernel ARPs
    for it over VXLAN (flooded to node-1 by an all-zeros FDB entry) and learns node-1's MAC
    from the agent's reply."""
    pod_ip = str(cluster.pods(selector="role=tools")[0]["status"]["podIP"])
    mac1, ns = _vtep_mac(cluster, "node-1"), kernel_peer
    flood = ["bridge", "-n", ns, "fdb", "append", "00:00:00:00:00:00", "dev", "flannel.1",
             "dst", cluster.node_ip(1)]  # fmt: skip
    before = int(cluster.table("node-1")["counters"].get("arp_replies", 0))
    assert _ip("-n", ns, "neigh", "del", "10.244.1.0", "dev", "flannel.1").returncode == 0
    try:
        assert subprocess.run(flood, check=False, timeout=30).returncode == 0
        wait_until(lambda: _in_peer(ns, "python3", str(ECHO_ICMP), pod_ip).returncode == 0, 30,
                   what="ICMP echo to a pod after resolving the VTEP", interval_s=0.5)  # fmt: skip
        neigh = json.loads(_ip("-n", ns, "-j", "neigh", "show", "10.244.1.0").stdout)
        assert neigh and neigh[0]["lladdr"] == mac1, neigh
        assert "PERMANENT" not in neigh[0]["state"], neigh
        assert int(cluster.table("node-1")["counters"]["arp_replies"]) > before
    finally:
        flood[3] = "del"
        subprocess.run(flood[:7] + flood[-2:], check=False, timeout=30)
        _ip("-n", ns, "neigh", "replace", "10.244.1.0", "lladdr", mac1, "dev", "flannel.1", "nud",
            "permanent")  # fmt: skip
