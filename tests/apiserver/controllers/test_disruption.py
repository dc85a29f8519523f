"""Node lifecycle under disruption: zone states, eviction rates, a control plane that stalls.

Kubernetes' rules (apiserver/controllers/disruption.py): most nodes of every zone lost at once
stops evictions; a partially disrupted large zone evicts at the secondary rate; time the
api-server could not observe does not count toward a node's grace.
"""

from __future__ import annotations

import itertools

import pytest

from knemu.apiserver.controllers.disruption import (
    REGION_LABEL,
    ZONE_LABEL,
    Disruption,
    ZoneState,
    zone_key,
    zone_state,
)
from knemu.apiserver.nodes import condition, is_ready

from ..cluster import Cluster

UNREACHABLE = "node.kubernetes.io/unreachable"


@pytest.mark.parametrize(
    ("ready", "not_ready", "state"),
    [
        (3, 0, ZoneState.NORMAL),
        (0, 1, ZoneState.FULL),
        (0, 5, ZoneState.FULL),
        (1, 2, ZoneState.NORMAL),  # two lost nodes never make a disruption
        (2, 3, ZoneState.PARTIAL),  # 3/5 = 0.6 >= 0.55
        (45, 55, ZoneState.PARTIAL),  # exactly 0.55
        (46, 54, ZoneState.NORMAL),
        (0, 0, ZoneState.NORMAL),
    ],
)
def test_zone_state_follows_compute_zone_state(
    ready: int, not_ready: int, state: ZoneState
) -> None:
    assert zone_state(ready, not_ready) is state


def test_zone_key_joins_region_and_zone() -> None:
    assert zone_key({}) == ""
    assert zone_key({ZONE_LABEL: "a"}) != zone_key({ZONE_LABEL: "b"})
    assert zone_key({REGION_LABEL: "r", ZONE_LABEL: "a"}) != zone_key({ZONE_LABEL: "a"})


def test_rates_per_state_and_zone_size() -> None:
    d = Disruption(eviction_qps=0.1, secondary_qps=0.01)
    big = [("big", i >= 60) for i in range(100)]  # 60 of 100 lost: partial, large zone
    small = [("small", i >= 4) for i in range(10)]  # 4 of 10: normal
    d.observe(big + small + [("tiny", False), ("tiny", False), ("tiny", False), ("tiny", True)])
    assert d.states == {"big": ZoneState.PARTIAL, "small": ZoneState.NORMAL,
                        "tiny": ZoneState.PARTIAL}  # fmt: skip
    assert (d.rate("big"), d.rate("small"), d.rate("tiny")) == (0.01, 0.1, 0.0)
    assert not d.halted


def test_token_bucket_allows_one_then_waits_for_the_rate() -> None:
    d = Disruption(eviction_qps=0.5, secondary_qps=0.01)
    d.observe([("", True), ("", False)])
    assert d.may_evict("", 100.0)
    assert not d.may_evict("", 100.0)
    assert d.next_token("", 100.0) == pytest.approx(102.0)
    assert not d.may_evict("", 101.9)
    assert d.may_evict("", 102.0)


def test_every_zone_fully_disrupted_halts_one_zone_does_not() -> None:
    d = Disruption(eviction_qps=1.0, secondary_qps=0.1)
    d.observe([("a", False), ("b", True)])
    assert d.states["a"] is ZoneState.FULL and not d.halted
    assert d.rate("a") == 1.0  # the other zone is fine: the lost one is really lost
    d.observe([("a", False), ("b", False)])
    assert d.halted and d.rate("a") == d.rate("b") == 0.0
    assert not d.may_evict("a", 0.0) and d.next_token("a", 0.0) is None


# ---- the controller, driven by the in-memory cluster ----------------------------------------


def _nodes(cluster: Cluster, count: int) -> list[str]:
    for i in range(1, count + 1):
        cluster.add_node(i)
    cluster.tick()
    return [f"node-{i}" for i in range(1, count + 1)]


def _pod_on(cluster: Cluster, node: str, pod_name: str) -> None:
    cluster.apply(
        {
            "kind": "Pod",
            "metadata": {"name": pod_name},
            "spec": {"containers": [{"name": "c", "image": "i"}], "nodeName": node},
        }
    )


def _taints(cluster: Cluster, node: str) -> set[str]:
    obj = cluster.store.get("Node", "", node)
    assert obj is not None
    return {t["effect"] for t in obj["spec"].get("taints") or [] if t["key"] == UNREACHABLE}


def _advance(cluster: Cluster, seconds: float, alive: list[str], step: float = 1.0) -> None:
    end = cluster.now + seconds
    while cluster.now < end:
        cluster.now = min(end, cluster.now + step)
        for name in alive:
            cluster.registry.renew(name, cluster.now)
        cluster.tick()


def test_every_node_lost_at_once_marks_them_unknown_but_evicts_nothing(cluster: Cluster) -> None:
    nodes = _nodes(cluster, 4)
    for i, node in enumerate(nodes):
        _pod_on(cluster, node, f"p{i}")
    cluster.tick()
    toleration = cluster.config.timings.eviction_toleration_s
    _advance(cluster, cluster.config.timings.node_grace_s + toleration * 3, alive=[])
    for node in nodes:
        obj = cluster.store.get("Node", "", node)
        assert obj is not None and condition(obj, "Ready")["status"] == "Unknown"  # type: ignore[index]
        assert _taints(cluster, node) == {"NoSchedule"}
    assert len(cluster.pods()) == 4  # nothing evicted
    assert all(condition(p, "Ready")["status"] == "False" for p in cluster.pods())  # type: ignore[index]
    assert not cluster.events("TaintManagerEviction")
    # One node back: 3 of 4 lost is still a (partial) disruption of a small zone: rate 0.
    _advance(cluster, 1.0, alive=nodes[:1])
    assert is_ready(cluster.store.get("Node", "", "node-1"))  # type: ignore[arg-type]
    assert not any("NoExecute" in _taints(cluster, n) for n in nodes)
    # Two back: two lost nodes are a real failure, evicted one at a time (node_eviction_qps).
    _advance(cluster, 1.0, alive=nodes[:2])
    assert sum("NoExecute" in _taints(cluster, n) for n in nodes[2:]) == 1


def test_halted_eviction_takes_the_no_execute_taints_off(cluster: Cluster) -> None:
    nodes = _nodes(cluster, 3)
    grace = cluster.config.timings.node_grace_s
    _advance(cluster, grace + 1, alive=nodes[1:])  # node-1 lost alone: tainted NoExecute
    assert _taints(cluster, "node-1") == {"NoSchedule", "NoExecute"}
    # then everything (no heartbeat heard at all: judged one grace period later), and the
    # taints come off again (markNodeAsReachable)
    _advance(cluster, 2 * grace + 1, alive=[])
    assert all(_taints(cluster, n) == {"NoSchedule"} for n in nodes)


def test_mass_failure_of_a_small_cluster_stops_evictions(cluster: Cluster) -> None:
    """6 of 10 nodes lost (>= 0.55, more than two) in a zone of <= 50 nodes: rate 0."""
    nodes = _nodes(cluster, 10)
    _advance(cluster, cluster.config.timings.node_grace_s + 30, alive=nodes[6:])
    assert not any("NoExecute" in _taints(cluster, n) for n in nodes)
    unknown = [n for n in nodes if not is_ready(cluster.store.get("Node", "", n))]  # type: ignore[arg-type]
    assert unknown == nodes[:6]


def test_lost_nodes_are_tainted_at_the_eviction_rate(cluster: Cluster) -> None:
    """Two of eight lost together (Normal): one NoExecute taint per 1/node_eviction_qps s."""
    nodes = _nodes(cluster, 8)
    grace, qps = cluster.config.timings.node_grace_s, cluster.config.timings.node_eviction_qps
    _advance(cluster, grace, alive=nodes[2:], step=0.25)
    tainted = [n for n in nodes[:2] if "NoExecute" in _taints(cluster, n)]
    assert len(tainted) == 1
    due = cluster.manager.nodes.next_deadline(cluster.now)
    assert due is not None and due <= cluster.now + 1 / qps
    _advance(cluster, 1 / qps, alive=nodes[2:], step=0.25)
    assert all("NoExecute" in _taints(cluster, n) for n in nodes[:2])


def test_time_the_apiserver_did_not_run_does_not_count_toward_grace(cluster: Cluster) -> None:
    nodes = _nodes(cluster, 5)
    grace = cluster.config.timings.node_grace_s
    _advance(cluster, 2.0, alive=nodes)
    lost_before = cluster.now - grace - 1  # a node already gone stays gone
    cluster.registry.discount_unobserved(cluster.now - 0.5, cluster.now - 0.5)  # no-op
    stall_start = cluster.now
    cluster.now += grace * 3  # the api-server's loop was blocked: no renewal was heard
    cluster.registry.discount_unobserved(stall_start, cluster.now)
    cluster.tick()
    assert all(is_ready(cluster.store.get("Node", "", n)) for n in nodes)  # type: ignore[arg-type]
    # the queued renewals arrive now for all but node-5, which really is gone
    _advance(cluster, grace + 1, alive=nodes[:4])
    ready = {n: is_ready(cluster.store.get("Node", "", n)) for n in nodes}  # type: ignore[arg-type]
    assert ready == {**dict.fromkeys(nodes[:4], True), "node-5": False}
    assert lost_before < stall_start


def test_heartbeats_queued_behind_a_busy_apiserver_are_not_silence(cluster: Cluster) -> None:
    """Every node's heartbeats reach the registry 3 s late (a backlog), while node-5 really
    stops: the others stay Ready, node-5 is lost once newer heartbeats show its silence."""
    nodes = _nodes(cluster, 5)
    grace = cluster.config.timings.node_grace_s
    backlog = grace - 1.0
    start = cluster.now
    cluster.now += backlog + grace  # nothing read for a while: all queued
    while cluster.now < start + backlog + 3 * grace:
        cluster.now += 0.5
        for name in nodes[:4]:  # sent `backlog` seconds ago, read only now
            cluster.registry.renew(name, cluster.now, sent_at=cluster.now - backlog)
        cluster.tick()
        assert all(is_ready(cluster.store.get("Node", "", n)) for n in nodes[:4])  # type: ignore[arg-type]
    assert not is_ready(cluster.store.get("Node", "", "node-5"))  # type: ignore[arg-type]
    assert cluster.registry.observed_until(cluster.now) == cluster.now - backlog


def test_heartbeats_read_from_a_few_nodes_only_do_not_condemn_the_rest(cluster: Cluster) -> None:
    """A busy server reads two nodes' heartbeats for a while and the other eight's not yet:
    the median heartbeat does not move, so none of the eight is declared lost."""
    nodes = _nodes(cluster, 10)
    grace = cluster.config.timings.node_grace_s
    _advance(cluster, grace * 1.5, alive=nodes[:2], step=0.25)
    assert all(is_ready(cluster.store.get("Node", "", n)) for n in nodes)  # type: ignore[arg-type]
    _advance(cluster, grace, alive=nodes, step=0.25)  # the backlog is read: all fine
    assert not cluster.events("NodeNotReady")


def test_a_clock_far_from_the_servers_is_not_believed(cluster: Cluster) -> None:
    _nodes(cluster, 2)
    cluster.now += 1
    grace = cluster.config.timings.node_grace_s
    cluster.registry.renew("node-1", cluster.now, sent_at=cluster.now + 3600)  # ahead
    cluster.registry.renew("node-2", cluster.now, sent_at=cluster.now - 10 * grace)  # behind
    assert cluster.registry.last_renew("node-1", cluster.now) == cluster.now
    assert cluster.registry.last_renew("node-2", cluster.now) == cluster.now


def test_no_flapping_when_renewals_arrive_late_but_within_grace(cluster: Cluster) -> None:
    """Renewals delayed by an overloaded server (jitter up to grace - 1 s) never flip a node."""
    _nodes(cluster, 20)
    grace = cluster.config.timings.node_grace_s
    delays = itertools.cycle([0.0, grace - 1.0, 0.5, grace - 1.5])
    for _ in range(20):
        cluster.now += next(delays)
        cluster.renew_all()
        cluster.tick()
    assert not cluster.events("NodeNotReady")
    assert all(is_ready(n) for n in cluster.store.list("Node"))
