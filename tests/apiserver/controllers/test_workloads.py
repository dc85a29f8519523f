"""Deployment, ReplicaSet and garbage collection, driven by an injected clock."""

from __future__ import annotations

import re

from knemu.apiserver.controllers.deployment import surge_and_unavailable
from knemu.apiserver.meta import naming

from ..cluster import Cluster, load_yaml

POD_NAME = re.compile(
    r"sample-deployment-([bcdfghjklmnpqrstvwxz2456789]{1,10})-([bcdfghjklmnpqrstvwxz2456789]{5})"
)


def _deploy(cluster: Cluster, replicas: int | None = None) -> dict:
    obj = load_yaml("sample-deployment.yaml")[0]
    if replicas is not None:
        obj["spec"]["replicas"] = replicas
    return cluster.apply(obj)


def _scale(cluster: Cluster, replicas: int) -> None:
    deploy = cluster.store.get("Deployment", "default", "sample-deployment")
    assert deploy is not None
    deploy["spec"]["replicas"] = replicas
    cluster.store.update(cluster.admission.admit_update(deploy, deploy, cluster.now), cluster.now)
    cluster.tick()


def _three_nodes(cluster: Cluster) -> None:
    for i in (1, 2, 3):
        cluster.add_node(i)


def test_deployment_makes_replicaset_and_three_pods_named_like_kubernetes(cluster: Cluster) -> None:
    _three_nodes(cluster)
    deploy = _deploy(cluster)
    cluster.tick()
    template_hash = naming.template_hash(deploy["spec"]["template"])
    sets = cluster.store.list("ReplicaSet", "default")
    assert [rs["metadata"]["name"] for rs in sets] == [f"sample-deployment-{template_hash}"]
    rs = sets[0]
    assert rs["metadata"]["ownerReferences"][0]["uid"] == deploy["metadata"]["uid"]
    assert rs["spec"]["selector"]["matchLabels"]["pod-template-hash"] == template_hash
    pods = cluster.pods()
    assert len(pods) == 3
    for pod in pods:
        m = POD_NAME.fullmatch(pod["metadata"]["name"])
        assert m is not None and m.group(1) == template_hash
        assert pod["metadata"]["labels"] == {
            "app": "sample-app",
            "pod-template-hash": template_hash,
        }
        assert pod["metadata"]["ownerReferences"][0]["name"] == rs["metadata"]["name"]
        assert pod["spec"]["restartPolicy"] == "Always"  # defaulted through admission
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["node-1", "node-2", "node-3"]


def test_pod_names_are_repeatable_with_the_same_seed(cluster: Cluster) -> None:
    _deploy(cluster)
    cluster.tick()
    first = sorted(p["metadata"]["name"] for p in cluster.pods())
    assert len(set(first)) == 3
    # A second cluster with the same seed names its pods identically.
    from knemu.apiserver import builtins
    from knemu.apiserver.admission.pipeline import Admission
    from knemu.apiserver.controllers import ControllerManager
    from knemu.apiserver.nodes import NodeRegistry
    from knemu.apiserver.recorder import EventRecorder
    from knemu.apiserver.storage.store import Store

    store = Store(":memory:")
    try:
        rec = EventRecorder(store)
        adm = Admission(store, cluster.config, rec)
        mgr = ControllerManager(
            store, cluster.config, NodeRegistry(store, cluster.config, rec), rec, seed=7
        )
        builtins.bootstrap(store, adm, cluster.now)
        store.create(
            adm.admit_create(load_yaml("sample-deployment.yaml")[0], cluster.now), cluster.now
        )
        mgr.sync(cluster.now)
        assert sorted(p["metadata"]["name"] for p in store.list("Pod", "default")) == first
    finally:
        store.close()


def test_scale_3_to_5_to_1_deletes_unscheduled_and_not_ready_first(cluster: Cluster) -> None:
    _three_nodes(cluster)
    _deploy(cluster)
    cluster.tick()
    cluster.run_pods()
    cluster.tick()
    _scale(cluster, 5)
    assert len(cluster.pods()) == 5
    rs = cluster.store.list("ReplicaSet", "default")[0]
    assert rs["spec"]["replicas"] == 5
    ready_before = {p["metadata"]["name"] for p in cluster.pods() if p["status"].get("podIP")}
    _scale(cluster, 1)
    remaining = cluster.pods()
    assert len(remaining) == 1
    # the two new, not-ready pods went first, then ready ones: the survivor is a ready one
    assert remaining[0]["metadata"]["name"] in ready_before
    deleted = cluster.events("SuccessfulDelete")
    assert len(deleted) == 4
    deploy = cluster.store.get("Deployment", "default", "sample-deployment")
    assert deploy is not None and deploy["status"]["replicas"] == 1


def test_deleted_pod_is_recreated(cluster: Cluster) -> None:
    _three_nodes(cluster)
    _deploy(cluster)
    cluster.tick()
    victim = cluster.pods()[0]["metadata"]["name"]
    cluster.store.delete("Pod", "default", victim, cluster.now)
    cluster.tick()
    names = {p["metadata"]["name"] for p in cluster.pods()}
    assert len(names) == 3 and victim not in names


def test_template_change_rolls_to_a_new_replicaset(cluster: Cluster) -> None:
    _three_nodes(cluster)
    _deploy(cluster)
    cluster.tick()
    cluster.run_pods()
    cluster.tick()
    old_rs = cluster.store.list("ReplicaSet", "default")[0]["metadata"]["name"]
    deploy = cluster.store.get("Deployment", "default", "sample-deployment")
    assert deploy is not None
    deploy["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.17"
    cluster.store.update(cluster.admission.admit_update(deploy, deploy, cluster.now), cluster.now)
    for _ in range(10):  # each round: new pods come up and report ready, old ones go
        cluster.tick()
        cluster.run_pods()
    cluster.tick()
    sets = {rs["metadata"]["name"]: rs for rs in cluster.store.list("ReplicaSet", "default")}
    new_rs = next(n for n in sets if n != old_rs)
    assert sets[old_rs]["spec"]["replicas"] == 0
    assert sets[new_rs]["spec"]["replicas"] == 3
    assert sets[new_rs]["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    images = {p["spec"]["containers"][0]["image"] for p in cluster.pods()}
    assert images == {"nginx:1.17"}
    status = cluster.store.get("Deployment", "default", "sample-deployment")["status"]  # type: ignore[index]
    assert status["updatedReplicas"] == 3 and status["availableReplicas"] == 3
    assert status["conditions"][1]["reason"] == "NewReplicaSetAvailable"


def test_rolling_update_respects_max_surge_and_unavailable(cluster: Cluster) -> None:
    _three_nodes(cluster)
    _deploy(cluster, replicas=4)
    cluster.tick()
    cluster.run_pods()
    cluster.tick()
    deploy = cluster.store.get("Deployment", "default", "sample-deployment")
    assert deploy is not None
    assert surge_and_unavailable(deploy) == (1, 1)  # 25% of 4, surge up, unavailable down
    deploy["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.17"
    cluster.store.update(cluster.admission.admit_update(deploy, deploy, cluster.now), cluster.now)
    cluster.tick()
    # without new pods becoming ready: at most 4+1 pods, at least 4-1 available
    pods = cluster.pods()
    assert len(pods) <= 5
    ready = [p for p in pods if p["status"].get("podIP")]
    assert len(ready) >= 3


def test_recreate_scales_old_down_before_new_up(cluster: Cluster) -> None:
    _three_nodes(cluster)
    obj = load_yaml("sample-deployment.yaml")[0]
    obj["spec"]["strategy"] = {"type": "Recreate"}
    cluster.apply(obj)
    cluster.tick()
    deploy = cluster.store.get("Deployment", "default", "sample-deployment")
    assert deploy is not None
    deploy["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.17"
    cluster.store.update(cluster.admission.admit_update(deploy, deploy, cluster.now), cluster.now)
    cluster.tick()
    images = [p["spec"]["containers"][0]["image"] for p in cluster.pods()]
    assert images == ["nginx:1.17"] * 3
    assert len(cluster.store.list("ReplicaSet", "default")) == 2


def test_deleting_a_deployment_collects_its_replicasets_and_pods(cluster: Cluster) -> None:
    _deploy(cluster)
    cluster.tick()
    cluster.store.delete("Deployment", "default", "sample-deployment", cluster.now)
    cluster.tick()
    assert cluster.store.list("ReplicaSet", "default") == []
    assert cluster.pods() == []


def test_sync_is_quiet_when_nothing_changes(cluster: Cluster) -> None:
    _three_nodes(cluster)
    _deploy(cluster)
    cluster.tick()
    cluster.run_pods()
    cluster.tick()
    rv = cluster.store.resource_version
    cluster.tick(0.5)
    assert cluster.store.resource_version == rv
    assert cluster.manager.rounds == 0  # skipped: no change, no timer due
    cluster.store.create(
        cluster.admission.admit_create({"kind": "Namespace", "metadata": {"name": "x"}}, 0), 0
    )
    cluster.tick()
    # a write wakes every controller: the new namespace gets its ServiceAccount "default"
    # in the first round, the second writes nothing
    assert cluster.manager.rounds == 2
    assert cluster.store.get("ServiceAccount", "x", "default") is not None
    stats = cluster.manager.statistics()
    assert stats["skipped"] == 1 and stats["unsettled"] == 0 and stats["syncs"] >= 4


def _set_image(cluster: Cluster, image: str) -> None:
    deploy = cluster.store.get("Deployment", "default", "sample-deployment")
    assert deploy is not None
    deploy["spec"]["template"]["spec"]["containers"][0]["image"] = image
    cluster.store.update(cluster.admission.admit_update(deploy, deploy, cluster.now), cluster.now)
    for _ in range(10):
        cluster.tick()
        cluster.run_pods()
    cluster.tick()


def test_rollback_makes_the_old_replicaset_the_newest_revision(cluster: Cluster) -> None:
    _three_nodes(cluster)
    _deploy(cluster)
    cluster.tick()
    cluster.run_pods()
    first = cluster.store.list("ReplicaSet", "default")[0]["metadata"]["name"]
    _set_image(cluster, "nginx:1.17")
    _set_image(cluster, "nginx:1.16")
    sets = {rs["metadata"]["name"]: rs for rs in cluster.store.list("ReplicaSet", "default")}
    assert len(sets) == 2
    assert sets[first]["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    assert sets[first]["spec"]["replicas"] == 3
    assert {p["spec"]["containers"][0]["image"] for p in cluster.pods()} == {"nginx:1.16"}
    deploy = cluster.store.get("Deployment", "default", "sample-deployment")
    assert deploy is not None  # the Deployment names its newest revision, as upstream
    assert deploy["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"


def test_revision_history_limit_deletes_old_replicasets(cluster: Cluster) -> None:
    _three_nodes(cluster)
    obj = load_yaml("sample-deployment.yaml")[0]
    obj["spec"]["revisionHistoryLimit"] = 1
    cluster.apply(obj)
    cluster.tick()
    cluster.run_pods()
    for tag in ("1.17", "1.18", "1.19"):
        _set_image(cluster, f"nginx:{tag}")
    assert len(cluster.store.list("ReplicaSet", "default")) == 2  # current + 1 of history


def test_orphaned_pods_are_collected_after_quarantine(cluster: Cluster) -> None:
    cluster.apply(
        {
            "kind": "Pod",
            "metadata": {"name": "stray"},
            "spec": {"nodeName": "node-7", "containers": [{"name": "c", "image": "i"}]},
        }
    )
    cluster.tick()
    assert cluster.store.get("Pod", "default", "stray") is not None
    due = cluster.manager.next_deadline(cluster.now)
    assert due == cluster.now + 40
    cluster.now = due
    cluster.tick()
    assert cluster.store.get("Pod", "default", "stray") is None
    assert cluster.events("PodGCOrphaned")


def test_failed_pod_creation_is_reported_once(cluster: Cluster) -> None:
    rs = cluster.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "lone"},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "lone"}},
                "template": {
                    "metadata": {"labels": {"app": "lone"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]},
                },
            },
        }
    )
    # a template that admission rejects, written behind admission's back
    rs["spec"]["template"]["spec"]["containers"][0]["name"] = "Bad_Name"
    rs["spec"]["replicas"] = 2
    cluster.store.update(rs, cluster.now)
    cluster.tick()
    cluster.tick(1)
    (event,) = cluster.events("FailedCreate")
    assert event["type"] == "Warning" and "spec.containers[0].name" in event["message"]
    assert event["count"] == 1
    assert cluster.pods() == []


def test_template_hash_collision_bumps_collision_count(cluster: Cluster) -> None:
    _deploy(cluster)
    cluster.tick()
    rs = cluster.store.list("ReplicaSet", "default")[0]
    taken = rs["metadata"]["name"]
    rs["spec"]["template"]["spec"]["containers"][0]["image"] = "tampered"
    cluster.store.update(rs, cluster.now)
    cluster.tick()
    deploy = cluster.store.get("Deployment", "default", "sample-deployment")
    assert deploy is not None and deploy["status"]["collisionCount"] == 1
    names = {r["metadata"]["name"] for r in cluster.store.list("ReplicaSet", "default")}
    assert len(names) == 2 and taken in names


def test_paused_deployment_does_not_roll_out(cluster: Cluster) -> None:
    obj = load_yaml("sample-deployment.yaml")[0]
    obj["spec"]["paused"] = True
    cluster.apply(obj)
    cluster.tick()
    assert cluster.store.list("ReplicaSet", "default") == []
    deploy = cluster.store.get("Deployment", "default", "sample-deployment")
    assert deploy is not None
    deploy["spec"]["paused"] = False
    cluster.store.update(cluster.admission.admit_update(deploy, deploy, cluster.now), cluster.now)
    cluster.tick()
    assert len(cluster.pods()) == 3


def test_a_null_template_creation_timestamp_is_the_same_template(cluster: Cluster) -> None:
    _three_nodes(cluster)
    _deploy(cluster)
    cluster.tick()
    deploy = cluster.store.get("Deployment", "default", "sample-deployment")
    assert deploy is not None
    deploy["spec"]["template"]["metadata"]["creationTimestamp"] = None  # as kubectl sends it
    cluster.store.update(cluster.admission.admit_update(deploy, deploy, cluster.now), cluster.now)
    cluster.tick()
    assert len(cluster.store.list("ReplicaSet", "default")) == 1
