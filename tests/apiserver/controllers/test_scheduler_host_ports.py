"""Scheduler: the NodePorts filter (hostPort, protocol and hostIP clashes) and its messages."""

from __future__ import annotations

from typing import Any

from knemu.apiserver.controllers.scheduler import filter_reason, host_ports, ports_clash
from knemu.apiserver.nodes import condition

from ..cluster import Cluster

NO_PORTS = "node(s) didn't have free ports for the requested pod ports"


def _pod(name: str, *ports: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "nginx", "ports": list(ports)}], **spec},
    }


def _hp(port: int, protocol: str = "TCP", host_ip: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"containerPort": 80, "hostPort": port, "protocol": protocol}
    if host_ip:
        out["hostIP"] = host_ip
    return out


def _node_of(cluster: Cluster, name: str) -> str | None:
    pod = cluster.store.get("Pod", "default", name)
    assert pod is not None
    node: str | None = pod["spec"].get("nodeName")
    return node


def _message(cluster: Cluster, name: str) -> str:
    pod = cluster.store.get("Pod", "default", name)
    assert pod is not None
    cond = condition(pod, "PodScheduled")
    assert cond is not None and (cond["status"], cond["reason"]) == ("False", "Unschedulable")
    return str(cond["message"])


def test_host_ports_defaults_and_the_clash_rule() -> None:
    pod = _pod("p", _hp(8088), _hp(53, "UDP", "127.0.0.1"), {"containerPort": 9090})
    assert host_ports(pod) == [("TCP", "0.0.0.0", 8088), ("UDP", "127.0.0.1", 53)]
    assert ports_clash(("TCP", "0.0.0.0", 8088), ("TCP", "10.0.0.1", 8088))
    assert not ports_clash(("TCP", "10.0.0.2", 8088), ("TCP", "10.0.0.1", 8088))
    assert not ports_clash(("UDP", "0.0.0.0", 8088), ("TCP", "0.0.0.0", 8088))


def test_pods_with_one_host_port_go_to_different_nodes_then_wait(cluster: Cluster) -> None:
    for i in (1, 2, 3):
        cluster.add_node(i)
    for i in range(4):
        cluster.apply(_pod(f"hp{i}", _hp(8088)))
    cluster.tick()
    nodes = [_node_of(cluster, f"hp{i}") for i in range(4)]
    assert sorted(n for n in nodes if n) == ["node-1", "node-2", "node-3"]
    assert nodes[3] is None
    assert _message(cluster, "hp3").startswith(f"0/3 nodes are available: 3 {NO_PORTS}.")
    events = cluster.events("FailedScheduling")
    assert len(events) == 1 and NO_PORTS in events[0]["message"]
    # the holder on node-2 goes away: the waiting pod takes its port
    cluster.store.delete("Pod", "default", "hp1", cluster.now)
    cluster.tick(1)
    assert _node_of(cluster, "hp3") == "node-2"


def test_the_reason_is_counted_with_the_other_filters(cluster: Cluster) -> None:
    for i in (1, 2, 3):
        cluster.add_node(i)
    cluster.apply(_pod("holder", _hp(8088), nodeName="node-1"))
    cluster.apply(_pod("picky", _hp(8088), nodeSelector={"kubernetes.io/hostname": "node-1"}))
    cluster.tick()
    # node-2 and node-3 fail the selector first, node-1 the ports: "1 node(s) didn't have ..."
    message = _message(cluster, "picky")
    assert f"1 {NO_PORTS}" in message and "2 node(s) didn't match Pod's node affinity" in message


def test_other_protocol_other_address_and_finished_pods_do_not_clash(cluster: Cluster) -> None:
    cluster.add_node(1)
    cluster.apply(_pod("tcp", _hp(8088)))
    cluster.apply(_pod("udp", _hp(8088, "UDP")))
    cluster.apply(_pod("lo", _hp(9000, host_ip="127.0.0.1")))
    cluster.apply(_pod("node-ip", _hp(9000, host_ip="192.168.59.11")))
    cluster.tick()
    for name in ("tcp", "udp", "lo", "node-ip"):
        assert _node_of(cluster, name) == "node-1", name
    cluster.apply(_pod("any", _hp(9000)))  # 0.0.0.0 overlaps both addresses
    cluster.tick()
    assert _node_of(cluster, "any") is None
    for name in ("lo", "node-ip"):
        pod = cluster.store.get("Pod", "default", name)
        assert pod is not None
        uid = pod["metadata"]["uid"]
        report = {"namespace": "default", "name": name, "uid": uid, "node_name": "node-1",
                  "phase": "Succeeded", "container_statuses": []}  # fmt: skip
        cluster.registry.report_pod_status(report, cluster.now)
    cluster.tick(1)
    assert _node_of(cluster, "any") == "node-1"  # finished pods hold no ports


def test_filter_reason_takes_the_ports_in_use(cluster: Cluster) -> None:
    node = cluster.add_node(1)
    pod = _pod("p", _hp(8088))
    assert filter_reason(pod, node) is None
    assert filter_reason(pod, node, [("TCP", "0.0.0.0", 8088)]) == NO_PORTS
    assert filter_reason(pod, node, [("TCP", "0.0.0.0", 8089)]) is None
