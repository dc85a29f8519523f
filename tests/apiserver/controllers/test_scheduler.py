"""Scheduler: spreading, nodeName, nodeSelector, Unschedulable condition and event."""

from __future__ import annotations

from typing import Any

from knemu.apiserver.nodes import condition

from ..cluster import Cluster


def _pod(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "x"}},
        "spec": {"containers": [{"name": "c", "image": "nginx"}], **spec},
    }


def test_spreads_pods_over_the_least_loaded_nodes(cluster: Cluster) -> None:
    for i in (1, 2, 3):
        cluster.add_node(i)
    for i in range(6):
        cluster.apply(_pod(f"p{i}"))
    cluster.tick()
    per_node: dict[str, int] = {}
    for pod in cluster.pods():
        per_node[pod["spec"]["nodeName"]] = per_node.get(pod["spec"]["nodeName"], 0) + 1
        assert condition(pod, "PodScheduled")["status"] == "True"  # type: ignore[index]
    assert per_node == {"node-1": 2, "node-2": 2, "node-3": 2}
    scheduled = cluster.events("Scheduled")
    assert len(scheduled) == 6
    assert scheduled[0]["source"]["component"] == "default-scheduler"


def test_node_name_is_honoured_and_never_rescheduled(cluster: Cluster) -> None:
    for i in (1, 2):
        cluster.add_node(i)
    cluster.apply(_pod("pinned", nodeName="node-2"))
    cluster.apply(_pod("free"))
    cluster.tick()
    assert cluster.store.get("Pod", "default", "pinned")["spec"]["nodeName"] == "node-2"  # type: ignore[index]
    # the free pod avoids node-2, which already runs the pinned one
    assert cluster.store.get("Pod", "default", "free")["spec"]["nodeName"] == "node-1"  # type: ignore[index]


def test_node_selector_picks_matching_nodes_only(cluster: Cluster) -> None:
    cluster.add_node(1)
    cluster.add_node(2, labels={"disk": "ssd"})
    cluster.add_node(3)
    for i in range(3):
        cluster.apply(_pod(f"s{i}", nodeSelector={"disk": "ssd"}))
    cluster.tick()
    assert {p["spec"]["nodeName"] for p in cluster.pods()} == {"node-2"}


def test_unschedulable_pod_stays_pending_with_condition_and_event(cluster: Cluster) -> None:
    cluster.add_node(1)
    cluster.add_node(2)
    cluster.add_node(3)
    node3 = cluster.store.get("Node", "", "node-3")
    assert node3 is not None
    node3["spec"]["unschedulable"] = True
    cluster.store.update(node3, cluster.now)
    cluster.apply(_pod("picky", nodeSelector={"disk": "ssd"}))
    cluster.tick()
    pod = cluster.store.get("Pod", "default", "picky")
    assert pod is not None
    assert not pod["spec"].get("nodeName")
    assert pod["status"]["phase"] == "Pending"
    cond = condition(pod, "PodScheduled")
    assert cond is not None
    assert (cond["status"], cond["reason"]) == ("False", "Unschedulable")
    expected = (
        "0/3 nodes are available: 1 node(s) were unschedulable, "
        "2 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are "
        "available: 3 Preemption is not helpful for scheduling."
    )
    assert cond["message"] == expected
    events = cluster.events("FailedScheduling")
    assert len(events) == 1 and events[0]["type"] == "Warning"
    assert events[0]["message"] == cond["message"]
    # retried quietly: no new event and no writes while nothing changes
    rv = cluster.store.resource_version
    cluster.tick(1)
    assert cluster.store.resource_version == rv
    # a matching node appears: the pod is bound
    cluster.add_node(4, labels={"disk": "ssd"})
    cluster.tick()
    assert cluster.store.get("Pod", "default", "picky")["spec"]["nodeName"] == "node-4"  # type: ignore[index]


def test_no_nodes_at_all(cluster: Cluster) -> None:
    cluster.apply(_pod("lonely"))
    cluster.tick()
    pod = cluster.store.get("Pod", "default", "lonely")
    assert pod is not None
    assert "no nodes available to schedule pods" in condition(pod, "PodScheduled")["message"]  # type: ignore[index]


def test_not_ready_nodes_are_skipped(cluster: Cluster) -> None:
    cluster.add_node(1)
    cluster.add_node(2)
    # both leases expire (no heartbeat heard from anyone: one grace period more than usual)
    cluster.tick(2 * cluster.config.timings.node_grace_s + 0.1)
    cluster.registry.renew("node-2", cluster.now)
    cluster.apply(_pod("p"))
    cluster.tick()
    assert cluster.store.get("Pod", "default", "p")["spec"]["nodeName"] == "node-2"  # type: ignore[index]
