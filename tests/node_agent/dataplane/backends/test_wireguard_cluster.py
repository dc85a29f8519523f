"""``--encryption wireguard`` on a real 2-node cluster (issue 16): each node publishes its
public key on its Node as Calico does, seed 003's ClusterIP traffic works across nodes sealed
in UDP 51820 (tshark decodes WireGuard transport data, no VXLAN on the wire), the pod MTU is
1440, and frames whose origin cannot be proven are not delivered: a frame sealed by an
attacker who knows both public keys and forges node-2's address (``unauthenticated``), and a
genuine frame of node-2's captured and replayed from the attacker (``replayed``)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from localcluster import FROM, LocalCluster, local_cluster, tools_pod

from knemu.node_agent.dataplane import backends
from knemu.node_agent.dataplane.backends import wireguard as wg
from knemu.proto import wire
from knemu.testing import wait_until

from ._underlay import (
    LISTEN_PORT,
    attacker,
    close_listener,
    counters,
    listener,
    node_annotations,
    send as send_from,
)

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(600)]
KEY = "projectcalico.org/WireguardPublicKey"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("knemu-wg")
    with local_cluster(root, nodes=2, encryption="wireguard") as c:
        c.apply(tools_pod("tools-1", "node-1"))
        c.apply(tools_pod("tools-2", "node-2"))
        c.apply_file("examples/sample-deployment.yaml")
        c.apply_file("examples/sample-clusterip.yaml")
        c.wait_ready(2, selector="role=tools")
        c.wait_ready(3, selector="app=sample-app")
        yield c


def pod_ip(c: LocalCluster, name: str) -> str:
    return str(c.get(f"/api/v1/namespaces/default/pods/{name}")["status"]["podIP"])


def test_keys_published_and_seed_003_works_sealed(cluster: LocalCluster, tmp_path: Path) -> None:
    keys = {n: node_annotations(cluster, n).get(KEY, "") for n in ("node-1", "node-2")}
    assert all(len(wg.public_key_bytes(k)) == 32 for k in keys.values()), keys
    assert keys["node-1"] != keys["node-2"]
    table = cluster.table("node-1")
    assert table["encryption"] == "wireguard"
    assert table["wireguard"]["public_key"] == keys["node-1"]
    assert table["wireguard"]["peers"][cluster.node_ip(2)]["public_key"] == keys["node-2"]
    assert cluster.exec("tools-1", "cat /sys/class/net/eth0/mtu").stdout.strip() == "1440"
    ip = cluster.service("sample-clusterip")["spec"]["clusterIP"]
    pcap = tmp_path / "underlay.pcap"
    capture = subprocess.Popen(
        ["ip", "netns", "exec", cluster.node_ns(1), "tcpdump", "-i", "eth0", "-U", "-c", "4",
         "-w", str(pcap), "udp and not port 53"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert capture.stderr is not None
        assert "listening on" in capture.stderr.readline()

        def all_replicas() -> bool:
            out = cluster.exec("tools-1", f"for i in $(seq 20); do curl -s -m 5 "
                               f"http://{ip}:8080; echo; done")  # fmt: skip
            names = {frm for frm, _ in FROM.findall(out.stdout)}
            return names == {p["metadata"]["name"] for p in cluster.pods(selector="app=sample-app")}

        wait_until(all_replicas, 60, what="curl to the ClusterIP reaches all 3 replicas",
                   interval_s=0.5)  # fmt: skip
        wait_until(lambda: capture.poll() is not None, 20, what="4 underlay datagrams captured")
    finally:
        capture.terminate()
        capture.wait(10)
    fields = subprocess.run(
        ["tshark", "-r", str(pcap), "-d", "udp.port==51820,wg", "-T", "fields", "-E",
         "separator=|", "-e", "udp.dstport", "-e", "wg.type", "-e", "vxlan.vni"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.splitlines()  # fmt: skip
    assert fields and all(f.startswith("51820|4|") for f in fields), fields  # no VXLAN
    assert not any(f.endswith("|1") for f in fields), fields


def test_frames_whose_origin_is_not_proven_are_not_delivered(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    target, peer_pod = pod_ip(cluster, "tools-1"), pod_ip(cluster, "tools-2")
    node1, node2 = cluster.node_ip(1), cluster.node_ip(2)
    start = counters(cluster, "node-1")
    # The attacker knows both public keys (they are on the Node objects) and seals with its own.
    forger = wg.WireguardBackend(wg.KeyPair())
    forger.set_peer_key(node1, node_annotations(cluster, "node-1")[KEY])
    # Counters ahead of node-2's own, so they pass the replay window and reach the tag check.
    forger.sessions[node1].tx_counter = 1 << 40
    inner = wire.udp_packet(peer_pod, target, 5555, LISTEN_PORT, b"forged")
    forged, _ = forger.encapsulate(inner, backends.PeerAddress(node1))
    with attacker(cluster) as (ns, _), listener(cluster, "tools-1") as proc:
        genuine = capture_one(
            cluster,
            tmp_path,
            f"udp and src host {node2} and dst port 51820",
            lambda: cluster.exec("tools-2", f"curl -s -m 3 http://{target}:1/"),
        )
        send_from(ns, node2, node1, 51820, *[forged] * 5)
        send_from(ns, node2, node1, 51820, *[genuine] * 3)

        def dropped() -> bool:
            now = counters(cluster, "node-1")
            return (
                now.get("drop_unauthenticated", 0) >= start.get("drop_unauthenticated", 0) + 5
                and now.get("drop_replayed", 0) >= start.get("drop_replayed", 0) + 3
            )

        try:
            wait_until(dropped, 30, what="5 forged frames unauthenticated, 3 replays replayed",
                       interval_s=0.2)  # fmt: skip
        except TimeoutError as exc:
            raise AssertionError(f"{exc}: {start} -> {counters(cluster, 'node-1')}") from None
        seen = close_listener(cluster, proc, "tools-2", target)
    assert "got legit" in seen and "forged" not in seen, seen
    flows = cluster.knemu("flows", "node-1", "--limit", "500").stdout
    reasons = [line for line in flows.splitlines() if "reason=unauthenticated" in line]
    assert reasons and f"outer {node2} -> {node1}:51820 wireguard" in reasons[-1], flows


def capture_one(
    cluster: LocalCluster, tmp_path: Path, bpf: str, traffic: Callable[[], object]
) -> bytes:
    """The UDP payload of the first datagram on node-1's underlay matching ``bpf`` while
    ``traffic()`` runs."""
    pcap = tmp_path / "one.pcap"
    capture = subprocess.Popen(
        ["ip", "netns", "exec", cluster.node_ns(1), "tcpdump", "-i", "eth0", "-U", "-c", "1",
         "-w", str(pcap), bpf],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert capture.stderr is not None
        assert "listening on" in capture.stderr.readline()

        def captured() -> bool:
            traffic()
            return capture.poll() is not None

        wait_until(captured, 30, what="a datagram from node-2 captured", interval_s=0.2)
    finally:
        capture.terminate()
        capture.wait(10)
    data = subprocess.run(
        ["tshark", "-r", str(pcap), "-T", "fields", "-e", "udp.payload"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.split()  # fmt: skip
    assert data, "no datagram captured"
    return bytes.fromhex(data[0].replace(":", ""))
