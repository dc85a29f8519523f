"""Node lifecycle: grace -> NotReady -> endpoints not ready -> eviction -> replacement."""

from __future__ import annotations

from knemu.apiserver.nodes import condition, is_ready
from knemu.config import ApiServerConfig, Timings

from ..cluster import Cluster, load_yaml


def _setup(cluster: Cluster) -> None:
    for i in (1, 2, 3):
        cluster.add_node(i)
    cluster.apply(load_yaml("sample-deployment.yaml")[0])
    cluster.apply(load_yaml("sample-clusterip.yaml")[0])
    cluster.tick()
    cluster.run_pods()
    cluster.tick()


def _slice_conditions(cluster: Cluster) -> dict[str, bool]:
    (slice_,) = [
        s
        for s in cluster.store.list("EndpointSlice", "default")
        if s["metadata"]["labels"]["kubernetes.io/service-name"] == "sample-clusterip"
    ]
    return {ep["nodeName"]: ep["conditions"]["ready"] for ep in slice_["endpoints"]}


def test_lost_node_goes_not_ready_then_its_pods_are_replaced(cluster: Cluster) -> None:
    _setup(cluster)
    timings = cluster.config.timings
    assert _slice_conditions(cluster) == {"node-1": True, "node-2": True, "node-3": True}
    # node-2 stops renewing; the others keep renewing every second
    deadline = cluster.now + timings.node_grace_s
    while cluster.now < deadline:
        assert is_ready(cluster.store.get("Node", "", "node-2"))  # type: ignore[arg-type]
        cluster.now += timings.lease_renew_s
        for name in ("node-1", "node-3"):
            cluster.registry.renew(name, cluster.now)
        cluster.tick()
    node2 = cluster.store.get("Node", "", "node-2")
    assert node2 is not None
    ready = condition(node2, "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == (
        "Unknown",
        "NodeStatusUnknown",
    )
    taints = {(t["key"], t["effect"]) for t in node2["spec"]["taints"]}
    assert taints == {
        ("node.kubernetes.io/unreachable", "NoSchedule"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
    }
    assert cluster.events("NodeNotReady")
    assert _slice_conditions(cluster) == {"node-1": True, "node-2": False, "node-3": True}
    victim = next(p for p in cluster.pods() if p["spec"]["nodeName"] == "node-2")
    assert condition(victim, "Ready")["status"] == "False"  # type: ignore[index]
    # the pods stay for their toleration (eviction_toleration_s), then are evicted
    evict_at = cluster.now + timings.eviction_toleration_s
    while cluster.now < evict_at:
        due = cluster.manager.next_deadline(cluster.now)
        assert due is not None and cluster.now < due <= evict_at
        assert cluster.store.get("Pod", "default", victim["metadata"]["name"]) is not None
        cluster.now = min(due, cluster.now + timings.lease_renew_s)
        for name in ("node-1", "node-3"):
            cluster.registry.renew(name, cluster.now)
        cluster.tick()
    pods = cluster.pods()
    assert victim["metadata"]["name"] not in {p["metadata"]["name"] for p in pods}
    assert len(pods) == 3
    assert all(p["spec"]["nodeName"] in ("node-1", "node-3") for p in pods)
    evictions = cluster.events("TaintManagerEviction")
    assert evictions and victim["metadata"]["name"] in evictions[0]["message"]


def test_renew_makes_the_node_ready_again_and_restores_pod_readiness(cluster: Cluster) -> None:
    _setup(cluster)
    cluster.now += cluster.config.timings.node_grace_s
    for name in ("node-1", "node-3"):
        cluster.registry.renew(name, cluster.now)
    cluster.tick()
    assert not is_ready(cluster.store.get("Node", "", "node-2"))  # type: ignore[arg-type]
    assert cluster.registry.renew("node-2", cluster.now + 1)
    cluster.tick(1)
    node2 = cluster.store.get("Node", "", "node-2")
    assert node2 is not None and is_ready(node2)
    assert node2["spec"]["taints"] == []
    assert _slice_conditions(cluster) == {"node-1": True, "node-2": True, "node-3": True}


def test_next_deadline_is_the_earliest_lease_expiry(cluster: Cluster) -> None:
    cluster.add_node(1)
    cluster.tick()
    expiry = cluster.now + cluster.config.timings.node_grace_s
    assert cluster.manager.nodes.next_deadline(cluster.now) == expiry
    # the node's Lease object is republished before that (controllers/nodelease.py)
    assert cluster.manager.next_deadline(cluster.now) == cluster.manager.leases.next_deadline()
    cluster.tick(cluster.config.timings.node_grace_s - 0.5)
    assert is_ready(cluster.store.get("Node", "", "node-1"))  # type: ignore[arg-type]


def test_kubernetes_timings_are_selectable() -> None:
    config = ApiServerConfig(timings=Timings.kubernetes())
    assert (config.timings.node_grace_s, config.timings.eviction_toleration_s) == (40.0, 300.0)


def test_renew_of_unknown_node_says_register_again(cluster: Cluster) -> None:
    assert cluster.registry.renew("node-9", cluster.now) is False


def test_after_an_apiserver_restart_every_node_counts_as_renewed(cluster: Cluster) -> None:
    from knemu.apiserver.controllers import ControllerManager
    from knemu.apiserver.nodes import NodeRegistry

    _setup(cluster)
    # a new process on the same store, long after the last renewal it remembers nothing of
    later = cluster.now + 1000
    registry = NodeRegistry(cluster.store, cluster.config, cluster.recorder)
    manager = ControllerManager(cluster.store, cluster.config, registry, cluster.recorder)
    manager.sync(later)
    assert all(is_ready(n) for n in cluster.store.list("Node"))
    grace = cluster.config.timings.node_grace_s
    assert manager.nodes.next_deadline(later) == later + grace
    registry.renew("node-1", later + 3)
    # two of three silent: most nodes at once, judged one grace period later than usual
    manager.sync(later + 2 * cluster.config.timings.node_grace_s)
    ready = {n["metadata"]["name"]: is_ready(n) for n in cluster.store.list("Node")}
    assert ready == {"node-1": True, "node-2": False, "node-3": False}


def test_kubernetes_timings_give_pods_300_seconds(cluster: Cluster) -> None:
    from knemu.apiserver.admission.pipeline import Admission

    admission = Admission(cluster.store, ApiServerConfig(timings=Timings.kubernetes()))
    pod = admission.admit_create(
        {
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
        },
        cluster.now,
    )
    seconds = {t["key"]: t["tolerationSeconds"] for t in pod["spec"]["tolerations"]}
    assert seconds == {"node.kubernetes.io/not-ready": 300, "node.kubernetes.io/unreachable": 300}


def test_pod_without_toleration_is_evicted_at_once_and_forever_tolerating_stays(
    cluster: Cluster,
) -> None:
    cluster.add_node(1)
    cluster.add_node(2)  # stays healthy: with every node lost, nothing is evicted (below)
    base = {"containers": [{"name": "c", "image": "i"}], "nodeName": "node-1"}
    forever = [
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}
    ]
    cluster.apply(
        {"kind": "Pod", "metadata": {"name": "stays"}, "spec": {**base, "tolerations": forever}}
    )
    bare = cluster.admission.admit_create(
        {"kind": "Pod", "metadata": {"name": "goes"}, "spec": base}, cluster.now
    )
    bare["spec"]["tolerations"] = []  # as if created without the DefaultTolerationSeconds plugin
    cluster.store.create(bare, cluster.now)
    cluster.tick()
    cluster.now += cluster.config.timings.node_grace_s
    cluster.registry.renew("node-2", cluster.now)
    cluster.tick()
    assert cluster.store.get("Pod", "default", "goes") is None
    for _ in range(10):
        cluster.now += 100
        cluster.registry.renew("node-2", cluster.now)
        cluster.tick()
    assert cluster.store.get("Pod", "default", "stays") is not None
