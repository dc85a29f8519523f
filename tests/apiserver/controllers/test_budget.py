"""Controllers never block serving (issue 16): budgeted steps that resume, slow-start pod
batches with burst 500, and a malformed stored object skipped instead of stalling the rest."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from knemu.apiserver.controllers.replicaset import BURST_REPLICAS
from knemu.errors import Exhausted

from ..cluster import Cluster


def deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            },
        },
    }


def service(name: str, app: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"app": app}, "ports": [{"port": 80}]},
    }


class Budget:
    """``over_budget`` that says "spent" after ``calls`` checks (a clock stands in)."""

    def __init__(self, calls: int) -> None:
        self.left = calls

    def __call__(self) -> bool:
        self.left -= 1
        return self.left < 0


def test_a_big_replicaset_is_created_in_budgeted_steps_that_resume(cluster: Cluster) -> None:
    cluster.add_node(1)
    cluster.apply(deployment("big", 600))
    steps = 0
    while not cluster.manager.sync(cluster.now, Budget(20)):
        steps += 1
        assert steps < 1000, "the sync never settles"
    pods = cluster.pods()
    assert len(pods) == 600
    assert all(p["spec"].get("nodeName") == "node-1" for p in pods)  # the scheduler ran too
    assert steps > 10  # done in many short steps that each resumed, not one long one
    assert cluster.manager.statistics()["out_of_budget"] == steps


def test_one_replicaset_sync_creates_at_most_burst_replicas(cluster: Cluster) -> None:
    cluster.apply(deployment("big", 2 * BURST_REPLICAS + 7))
    cluster.manager.deployments.sync(cluster.now)
    cluster.manager.replicasets.sync(cluster.now)
    assert len(cluster.pods()) == BURST_REPLICAS
    cluster.manager.replicasets.sync(cluster.now)
    assert len(cluster.pods()) == 2 * BURST_REPLICAS


def test_failing_pod_creation_stops_after_the_first_slow_start_batch(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster.apply(deployment("web", 100))
    cluster.manager.deployments.sync(cluster.now)
    attempts = []

    def refuse(obj: dict[str, Any], now: float) -> dict[str, Any]:
        attempts.append(obj)
        raise Exhausted("no room")

    monkeypatch.setattr(cluster.manager.replicasets._ctx.admission, "admit_create", refuse)
    cluster.manager.replicasets.sync(cluster.now)
    assert len(attempts) == 1  # the first batch (1 pod) failed: no 99 more attempts
    assert len(cluster.events("FailedCreate")) == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"metadata": {"ownerReferences": 5}},
        {"metadata": {"ownerReferences": [5]}},
        {"spec": {"containers": [{"name": "c", "image": "x"}], "tolerations": [5]}},
        {"status": 5},
    ],
)
def test_a_malformed_stored_object_is_skipped_and_reported(
    cluster: Cluster, bad: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Stored before shapes were checked (or by hand): a new Service still gets its
    EndpointSlice and the object is named in a log line."""
    cluster.add_node(1)
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bad", "namespace": "default", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }
    for key, value in bad.items():
        if isinstance(value, dict) and isinstance(pod.get(key), dict):
            pod[key].update(value)
        else:
            pod[key] = value
    cluster.store.create(pod, cluster.now)  # past admission, as old data would be
    cluster.apply(deployment("web", 2))
    caplog.set_level(logging.WARNING, logger="knemu.apiserver.controllers")
    cluster.tick()
    cluster.run_pods()
    cluster.apply(service("web", "web"))
    cluster.tick()
    slices = cluster.store.list("EndpointSlice", "default")
    web = [s for s in slices if s["metadata"]["labels"].get("kubernetes.io/service-name") == "web"]
    assert web and len(web[0]["endpoints"]) == 2
    assert any("skip Pod default/bad" in r.getMessage() for r in caplog.records)
    assert cluster.manager.statistics()["malformed"] >= 1


def test_stored_replicas_beyond_int32_are_skipped_not_created(cluster: Cluster) -> None:
    """Data written before int32 was checked (issue 16: 2147483648 replicas hung every
    restart): the controllers skip that Deployment and settle."""
    cluster.store.create(deployment("huge", 2**31), cluster.now)
    cluster.apply(deployment("ok", 2))
    assert cluster.manager.sync(cluster.now)
    names = {p["metadata"]["name"].rsplit("-", 2)[0] for p in cluster.pods()}
    assert names == {"ok"} and len(cluster.pods()) == 2
