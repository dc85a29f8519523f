"""Server-side apply field sets, conflicts, force and removal."""

from __future__ import annotations

from typing import Any

import pytest

from knemu.apiserver.rest import ssa
from knemu.apiserver.rest.ssa import ApplyConflict

T = "2023-11-14T22:13:20Z"


def _deploy(replicas: int, labels: dict[str, str], image: str = "nginx") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": labels},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [
            {"name": "c", "image": image}]}}},
    }  # fmt: skip


def test_field_paths_key_lists_by_merge_key() -> None:
    paths = ssa.managed_paths(_deploy(2, {"app": "web"}))
    assert ("f:spec", "f:replicas") in paths
    assert ("f:metadata", "f:labels", "f:app") in paths
    element = ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"c"}')
    assert (*element, "f:image") in paths and element in paths
    assert ("f:metadata", "f:name") not in paths and ("f:kind",) not in paths


def test_fields_v1_round_trip() -> None:
    paths = ssa.managed_paths(_deploy(2, {"app": "web"}))
    tree = ssa.to_fields_v1(paths)
    assert tree["f:spec"]["f:replicas"] == {}
    assert ssa.from_fields_v1(tree) == paths


def test_second_manager_conflicts_then_forces() -> None:
    live = ssa.apply({}, _deploy(2, {"app": "web"}), "alice", False, T)
    assert [e["manager"] for e in live["metadata"]["managedFields"]] == ["alice"]
    same = ssa.apply(live, _deploy(2, {"app": "web"}), "bob", False, T)  # same values: shared
    assert [e["manager"] for e in same["metadata"]["managedFields"]] == ["alice", "bob"]
    with pytest.raises(ApplyConflict) as caught:
        ssa.apply(live, _deploy(5, {"app": "web"}), "bob", False, T)
    assert caught.value.message == (
        'Apply failed with 1 conflict: conflict with "alice" using apps/v1: .spec.replicas'
    )
    assert caught.value.causes[0].field == ".spec.replicas"
    forced = ssa.apply(live, _deploy(5, {"app": "web"}), "bob", True, T)
    assert forced["spec"]["replicas"] == 5
    alice = ssa.from_fields_v1(forced["metadata"]["managedFields"][0]["fieldsV1"])
    assert ("f:spec", "f:replicas") not in alice


def test_fields_no_longer_applied_are_removed_unless_shared() -> None:
    live = ssa.apply({}, _deploy(2, {"app": "web", "team": "a"}), "alice", False, T)
    dropped = ssa.apply(live, _deploy(2, {"app": "web"}), "alice", False, T)
    assert dropped["metadata"]["labels"] == {"app": "web"}
    shared = ssa.apply(live, _deploy(2, {"app": "web", "team": "a"}), "bob", False, T)
    kept = ssa.apply(shared, _deploy(2, {"app": "web"}), "alice", False, T)
    assert kept["metadata"]["labels"] == {"app": "web", "team": "a"}  # bob still sets it


def test_defaults_in_a_keyed_element_are_no_conflict() -> None:
    live = ssa.apply({}, _deploy(2, {"app": "web"}), "alice", False, T)
    container = live["spec"]["template"]["spec"]["containers"][0]
    container["imagePullPolicy"] = "IfNotPresent"  # what admission defaults
    same = ssa.apply(live, _deploy(2, {"app": "web"}), "bob", False, T)
    assert len(same["metadata"]["managedFields"]) == 2
