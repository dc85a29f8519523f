"""The underlay source check (issue 16) on a real 2-node VXLAN cluster: a VXLAN frame from an
address that is no current node, sent from a namespace on the node switch, is not delivered
to the pod it targets; node-1 counts it and `knemu flows` names the reason and the sender.

The same frame with node-2's address forged as its source *is* delivered: plain VXLAN proves
nothing about its origin (the control that shows this test can fail, and the reason for
``--encryption wireguard``, tested in test_wireguard_cluster.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from localcluster import LocalCluster, local_cluster, read_until, tools_pod

from knemu.node_agent.dataplane import backends
from knemu.proto import wire
from knemu.testing import wait_until

from ._underlay import (
    LISTEN_PORT,
    attacker,
    close_listener,
    counters,
    listener,
    send,
    vtep_mac,
)

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("knemu-srccheck"), nodes=2) as c:
        c.apply(tools_pod("tools-1", "node-1"))
        c.apply(tools_pod("tools-2", "node-2"))
        c.wait_ready(2, selector="role=tools")
        yield c


def pod_ip(c: LocalCluster, name: str) -> str:
    return str(c.get(f"/api/v1/namespaces/default/pods/{name}")["status"]["podIP"])


def vxlan_to(c: LocalCluster, src_pod_ip: str, dst_pod_ip: str, text: bytes) -> bytes:
    """The VXLAN payload node-2 would send node-1 for a UDP datagram between two pods."""
    inner = wire.udp_packet(src_pod_ip, dst_pod_ip, 5555, LISTEN_PORT, text)
    sender = backends.create("vxlan", vtep_mac=vtep_mac(c, "node-2"))
    frame, _ = sender.encapsulate(
        inner, backends.PeerAddress(c.node_ip(1), vtep_mac(c, "node-1"), 4789)
    )
    return frame


def test_vxlan_from_a_non_node_address_is_not_delivered(cluster: LocalCluster) -> None:
    target, peer_pod = pod_ip(cluster, "tools-1"), pod_ip(cluster, "tools-2")
    before = counters(cluster, "node-1").get("drop_unknown_peer", 0)
    with attacker(cluster) as (ns, evil_ip), listener(cluster, "tools-1") as proc:
        # Control: node-2's address forged as the source gets through (VXLAN has no proof).
        forged = vxlan_to(cluster, peer_pod, target, b"forged-as-node-2")
        seen = ""

        def forged_arrives() -> bool:
            nonlocal seen
            send(ns, cluster.node_ip(2), cluster.node_ip(1), 4789, forged)
            try:
                seen += read_until(proc, proc.stdout, "got forged-as-node-2", 1)
            except AssertionError:
                return False
            return True

        wait_until(forged_arrives, 30, what="the control frame delivered", interval_s=0.2)
        # The attack: the same frame from the attacker's own address, which is no node's.
        stranger = vxlan_to(cluster, peer_pod, target, b"from-a-stranger")
        send(ns, evil_ip, cluster.node_ip(1), 4789, *[stranger] * 5)
        wait_until(
            lambda: counters(cluster, "node-1").get("drop_unknown_peer", 0) >= before + 5,
            30, what="node-1 drops the 5 frames as unknown_peer", interval_s=0.2,
        )  # fmt: skip
        seen += close_listener(cluster, proc, "tools-2", target)
    assert "got forged-as-node-2" in seen and "got legit" in seen, seen
    assert "from-a-stranger" not in seen, seen
    flows = cluster.knemu("flows", "node-1", "--limit", "500").stdout
    dropped = [line for line in flows.splitlines() if "reason=unknown_peer" in line]
    assert dropped, flows
    assert f"outer {evil_ip} -> {cluster.node_ip(1)}:4789" in dropped[-1], dropped
    assert f"{peer_pod}:5555" in dropped[-1], dropped  # the inner packet it carried
