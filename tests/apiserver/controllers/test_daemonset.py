"""DaemonSet controller: one pod per eligible node (nodeSelector, taints and tolerations),
status counts, rolling update one node at a time, OnDelete, and the plan core on its own."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from knemu.apiserver.controllers.daemonset import (
    GENERATION_LABEL,
    HASH_LABEL,
    daemon_tolerations,
    node_placement,
)
from knemu.apiserver.meta import naming
from knemu.errors import Invalid

from ..cluster import Cluster, load_yaml


def _ds(cluster: Cluster, **spec: Any) -> dict[str, Any]:
    obj = load_yaml("sample-daemonset.yaml")[0]
    obj["spec"].update(spec)
    return cluster.apply(obj)


def _pods(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """node name -> the daemon pod there."""
    pods = [p for p in cluster.pods() if p["metadata"]["name"].startswith("node-echo-")]
    by_node = {p["spec"]["nodeName"]: p for p in pods}
    assert len(by_node) == len(pods), "two daemon pods on one node"
    return by_node


def _status(cluster: Cluster) -> dict[str, Any]:
    ds = cluster.store.get("DaemonSet", "default", "node-echo")
    assert ds is not None
    return dict(ds["status"])


def _update(cluster: Cluster, change: Any) -> None:
    ds = cluster.store.get("DaemonSet", "default", "node-echo")
    assert ds is not None
    new = copy.deepcopy(ds)
    change(new)
    cluster.store.update(cluster.admission.admit_update(ds, new, cluster.now), cluster.now)


def test_one_pod_per_node_bound_labelled_and_tolerating(cluster: Cluster) -> None:
    for i in (1, 2, 3):
        cluster.add_node(i)
    ds = _ds(cluster)
    cluster.tick()
    pods = _pods(cluster)
    assert sorted(pods) == ["node-1", "node-2", "node-3"]
    template_hash = naming.template_hash(ds["spec"]["template"])
    for pod in pods.values():
        labels = pod["metadata"]["labels"]
        assert labels == {"app": "node-echo", HASH_LABEL: template_hash, GENERATION_LABEL: "1"}
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet"
        unreachable = [t for t in pod["spec"]["tolerations"]
                       if t["key"] == "node.kubernetes.io/unreachable"]  # fmt: skip
        assert unreachable == [
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}
        ]  # fmt: skip (never evicted)
    assert _status(cluster) == {
        "currentNumberScheduled": 3, "numberMisscheduled": 0, "desiredNumberScheduled": 3,
        "numberReady": 0, "observedGeneration": 1, "updatedNumberScheduled": 3,
        "numberUnavailable": 3,
    }  # fmt: skip
    cluster.run_pods()
    cluster.tick()
    assert _status(cluster)["numberAvailable"] == 3 and "numberUnavailable" not in _status(cluster)
    created = cluster.events("SuccessfulCreate")
    assert sum(e["involvedObject"]["kind"] == "DaemonSet" for e in created) == 3


def test_new_nodes_get_a_pod_and_deleted_pods_come_back(cluster: Cluster) -> None:
    cluster.add_node(1)
    _ds(cluster)
    cluster.tick()
    cluster.add_node(2)
    cluster.tick()
    assert sorted(_pods(cluster)) == ["node-1", "node-2"]
    gone = _pods(cluster)["node-1"]["metadata"]["name"]
    cluster.store.delete("Pod", "default", gone, cluster.now)
    cluster.tick()
    assert _pods(cluster)["node-1"]["metadata"]["name"] != gone


def test_node_selector_and_taints_decide_the_nodes(cluster: Cluster) -> None:
    cluster.add_node(1, {"disk": "ssd"})
    cluster.add_node(2, {"disk": "ssd"})
    cluster.add_node(3)
    node2 = cluster.store.get("Node", "", "node-2")
    assert node2 is not None
    node2["spec"]["taints"] = [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]
    cluster.store.update(node2, cluster.now)
    ds = load_yaml("sample-daemonset.yaml")[0]
    ds["spec"]["template"]["spec"]["nodeSelector"] = {"disk": "ssd"}
    cluster.apply(ds)
    cluster.tick()
    assert sorted(_pods(cluster)) == ["node-1"]
    assert _status(cluster)["desiredNumberScheduled"] == 1

    def tolerate(new: dict[str, Any]) -> None:
        new["spec"]["template"]["spec"]["tolerations"] = [
            {"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}
        ]

    _update(cluster, tolerate)
    cluster.tick()
    assert sorted(_pods(cluster)) == ["node-1", "node-2"]


def test_placement_rules() -> None:
    spec: dict[str, Any] = {"nodeSelector": {"a": "1"}}
    node = {"metadata": {"labels": {"a": "1"}}, "spec": {}}
    assert node_placement(spec, node) == (True, True)
    assert node_placement(spec, {"metadata": {"labels": {}}}) == (False, False)
    no_schedule = {"metadata": {"labels": {"a": "1"}},
                   "spec": {"taints": [{"key": "x", "effect": "NoSchedule"}]}}  # fmt: skip
    assert node_placement(spec, no_schedule) == (False, True)  # keeps the pod it has
    no_execute = {"metadata": {"labels": {"a": "1"}},
                  "spec": {"taints": [{"key": "x", "effect": "NoExecute"}]}}  # fmt: skip
    assert node_placement(spec, no_execute) == (False, False)
    unreachable = {"metadata": {"labels": {"a": "1"}}, "spec": {"taints": [
        {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]}}  # fmt: skip
    assert node_placement(spec, unreachable) == (True, True)  # every daemon tolerates it
    keys = {t["key"] for t in daemon_tolerations({"hostNetwork": True})}
    assert "node.kubernetes.io/network-unavailable" in keys
    assert "node.kubernetes.io/network-unavailable" not in {
        t["key"] for t in daemon_tolerations({})}  # fmt: skip


def test_rolling_update_replaces_one_node_at_a_time(cluster: Cluster) -> None:
    for i in (1, 2, 3):
        cluster.add_node(i)
    _ds(cluster)
    cluster.tick()
    cluster.run_pods()
    cluster.tick()
    old = {n: p["metadata"]["name"] for n, p in _pods(cluster).items()}

    def new_image(new: dict[str, Any]) -> None:
        new["spec"]["template"]["spec"]["containers"][0]["image"] = "amsy810/echo-nginx:v2.1"

    _update(cluster, new_image)
    rounds = 0
    while any(p["metadata"]["name"] in old.values() for p in _pods(cluster).values()):
        cluster.tick()
        replaced = [n for n, p in _pods(cluster).items() if p["metadata"]["name"] != old[n]]
        unready = [p for p in _pods(cluster).values() if not p.get("status", {}).get("podIP")]
        assert len(unready) <= 1, "maxUnavailable 1: one node at a time"
        status = _status(cluster)
        assert status["observedGeneration"] == 2
        assert status.get("updatedNumberScheduled", 0) == len(replaced)
        cluster.run_pods()
        rounds += 1
        assert rounds <= 6
    cluster.tick()
    assert rounds == 3
    status = _status(cluster)
    assert status["updatedNumberScheduled"] == status["numberAvailable"] == 3
    assert {p["metadata"]["labels"][GENERATION_LABEL] for p in _pods(cluster).values()} == {"2"}


def test_on_delete_waits_for_the_pods_to_be_deleted(cluster: Cluster) -> None:
    cluster.add_node(1)
    cluster.add_node(2)
    _ds(cluster, updateStrategy={"type": "OnDelete"})
    cluster.tick()
    cluster.run_pods()
    cluster.tick()

    def new_image(new: dict[str, Any]) -> None:
        new["spec"]["template"]["spec"]["containers"][0]["image"] = "amsy810/echo-nginx:v2.1"

    _update(cluster, new_image)
    cluster.tick()
    assert _status(cluster).get("updatedNumberScheduled", 0) == 0
    doomed = _pods(cluster)["node-1"]["metadata"]["name"]
    cluster.store.delete("Pod", "default", doomed, cluster.now)
    cluster.tick()
    assert _status(cluster)["updatedNumberScheduled"] == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"updateStrategy": {"type": "Sometimes"}}, "spec.updateStrategy.type"),
        (
            {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0}}},
            "spec.updateStrategy.rollingUpdate.maxUnavailable",
        ),
        ({"selector": {"matchLabels": {"app": "other"}}}, "spec.template.metadata.labels"),
        ({"minReadySeconds": -1}, "spec.minReadySeconds"),
    ],
)
def test_invalid_daemon_sets_name_the_field(
    cluster: Cluster, change: dict[str, Any], field: str
) -> None:
    with pytest.raises(Invalid) as err:
        _ds(cluster, **change)
    assert field in str(err.value.message)


def test_deleting_the_daemon_set_removes_its_pods(cluster: Cluster) -> None:
    cluster.add_node(1)
    _ds(cluster)
    cluster.tick()
    assert _pods(cluster)
    cluster.store.delete("DaemonSet", "default", "node-echo", cluster.now)
    cluster.tick()
    assert not _pods(cluster)


def _revisions(cluster: Cluster) -> dict[int, str]:
    """revision -> the image its template runs."""
    return {
        cr["revision"]: cr["data"]["spec"]["template"]["spec"]["containers"][0]["image"]
        for cr in cluster.store.list("ControllerRevision", "default")
    }


def _set_image(cluster: Cluster, image: str) -> None:
    def change(new: dict[str, Any]) -> None:
        new["spec"]["template"]["spec"]["containers"][0]["image"] = image

    _update(cluster, change)
    cluster.tick()
    cluster.run_pods()
    cluster.tick()


def test_history_is_kept_as_controller_revisions(cluster: Cluster) -> None:
    cluster.add_node(1)
    ds = _ds(cluster, revisionHistoryLimit=1)
    cluster.tick()
    first = cluster.store.list("ControllerRevision", "default")
    assert len(first) == 1
    template_hash = naming.template_hash(ds["spec"]["template"])
    assert first[0]["metadata"]["name"] == f"node-echo-{template_hash}"
    assert first[0]["metadata"]["labels"][HASH_LABEL] == template_hash
    assert first[0]["data"]["spec"]["template"]["$patch"] == "replace"
    assert first[0]["metadata"]["ownerReferences"][0]["uid"] == ds["metadata"]["uid"]
    _set_image(cluster, "amsy810/echo-nginx:v2.1")
    assert _revisions(cluster) == {1: "amsy810/echo-nginx:v2.0", 2: "amsy810/echo-nginx:v2.1"}
    _set_image(cluster, "amsy810/echo-nginx:v2.0")  # an undo: revision 1 becomes 3
    assert _revisions(cluster) == {2: "amsy810/echo-nginx:v2.1", 3: "amsy810/echo-nginx:v2.0"}
    _set_image(cluster, "amsy810/echo-nginx:v2.2")  # limit 1: the oldest unused one goes
    assert _revisions(cluster) == {3: "amsy810/echo-nginx:v2.0", 4: "amsy810/echo-nginx:v2.2"}
    cluster.store.delete("DaemonSet", "default", "node-echo", cluster.now)
    cluster.tick()
    assert cluster.store.list("ControllerRevision", "default") == []


def test_surge_starts_the_new_pod_next_to_the_old_one(cluster: Cluster) -> None:
    for i in (1, 2, 3):
        cluster.add_node(i)
    rolling = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    _ds(cluster, updateStrategy=rolling)
    cluster.tick()
    cluster.run_pods()
    cluster.tick()

    def new_image(new: dict[str, Any]) -> None:
        new["spec"]["template"]["spec"]["containers"][0]["image"] = "amsy810/echo-nginx:v2.1"

    _update(cluster, new_image)
    for step in range(1, 4):
        cluster.tick()
        pods = [p for p in cluster.pods() if p["metadata"]["name"].startswith("node-echo-")]
        assert len(pods) == 4, "one node at a time has its old and its new pod"
        assert _status(cluster)["numberAvailable"] == 3  # nothing went down
        cluster.run_pods()  # the new pod is up: its old one goes, the next node surges
        cluster.tick()
        pods = [p for p in cluster.pods() if p["metadata"]["name"].startswith("node-echo-")]
        nodes_done = {p["spec"]["nodeName"] for p in pods
                      if p["spec"]["containers"][0]["image"].endswith("v2.1")} - {
            p["spec"]["nodeName"] for p in pods
            if p["spec"]["containers"][0]["image"].endswith("v2.0")}  # fmt: skip
        assert len(nodes_done) == step
    pods = [p for p in cluster.pods() if p["metadata"]["name"].startswith("node-echo-")]
    images = {p["spec"]["containers"][0]["image"] for p in pods}
    assert len(pods) == 3 and images == {"amsy810/echo-nginx:v2.1"}
