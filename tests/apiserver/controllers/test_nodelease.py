"""Node heartbeats as kube-node-lease Leases; a default ServiceAccount per namespace."""

from __future__ import annotations

from knemu.apiserver.controllers.nodelease import NAMESPACE, micro_time
from knemu.apiserver.meta.naming import parse_rfc3339

from ..cluster import Cluster


def _renew_time(cluster: Cluster, node: str) -> float:
    lease = cluster.store.get("Lease", NAMESPACE, node)
    assert lease is not None, f"no Lease for {node}"
    assert lease["spec"]["holderIdentity"] == node
    assert lease["metadata"]["ownerReferences"][0]["kind"] == "Node"
    stamp = parse_rfc3339(lease["spec"]["renewTime"])
    assert stamp is not None
    return stamp


def test_micro_time() -> None:
    assert micro_time(1_700_000_000.25) == "2023-11-14T22:13:20.250000Z"


def test_leases_follow_renewals_without_a_write_per_renewal(cluster: Cluster) -> None:
    cluster.add_node(1)
    cluster.tick()
    first = _renew_time(cluster, "node-1")
    every = cluster.manager.leases.publish_every_s
    lease = cluster.store.get("Lease", NAMESPACE, "node-1")
    assert lease is not None
    assert lease["spec"]["leaseDurationSeconds"] == 4  # the node grace period
    rv = cluster.store.resource_version
    cluster.registry.renew("node-1", cluster.now + every / 2)
    cluster.tick(every / 2)
    assert cluster.store.resource_version == rv  # a renewal alone writes nothing yet
    cluster.registry.renew("node-1", cluster.now + every / 2)
    cluster.tick(every / 2)
    assert _renew_time(cluster, "node-1") == first + every
    # a node that stops renewing keeps its last renewTime; a deleted node loses its Lease
    cluster.tick(every * 3)
    assert _renew_time(cluster, "node-1") == first + every
    assert cluster.manager.next_deadline(cluster.now) is not None
    cluster.store.delete("Node", "", "node-1", cluster.now)
    cluster.tick()
    assert cluster.store.get("Lease", NAMESPACE, "node-1") is None


def test_every_namespace_gets_a_default_service_account(cluster: Cluster) -> None:
    cluster.tick()
    for ns in ("default", "kube-system", "kube-node-lease"):
        assert cluster.store.get("ServiceAccount", ns, "default") is not None, ns
    cluster.store.delete("ServiceAccount", "default", "default", cluster.now)
    cluster.tick()
    assert cluster.store.get("ServiceAccount", "default", "default") is not None


def test_idle_heartbeats_cost_batches_not_rounds(cluster: Cluster) -> None:
    """40 nodes renewing at ten different phases: Leases are written in a few batches per
    period (not one wake-up per node), about once per node per period, and no round over
    every object runs, since nothing but heartbeats happened."""
    for i in range(1, 41):
        cluster.add_node(i)
    cluster.tick()
    every = cluster.manager.leases.publish_every_s
    batches: set[float] = set()
    cluster.store.add_listener(lambda e: batches.add(cluster.now) if e.kind == "Lease" else None)
    rounds, rv = cluster.manager.statistics()["rounds"], cluster.store.resource_version
    end = cluster.now + 10 * every
    while cluster.now < end:
        cluster.now += 0.1
        for i in range(1, 41):  # node-i renews at phase i % 10 of each second
            if round(cluster.now * 10) % 10 == i % 10:
                cluster.registry.renew(f"node-{i}", cluster.now)
        cluster.tick()
    stats = cluster.manager.statistics()
    assert stats["rounds"] == rounds and stats["timers"] >= 5
    assert len(batches) <= 10 * 2
    assert cluster.store.resource_version - rv <= 40 * 10 * 1.5
    assert not cluster.events("NodeNotReady")
