"""kubectl-apply style three-way merge (pure)."""

from __future__ import annotations

import json

from knemu.cli.apply import LAST_APPLIED, _desired, merge, merged_object


def _live_from(desired: dict, **server: object) -> dict:
    live = json.loads(json.dumps(desired))
    live["metadata"].update(uid="u1", resourceVersion="7", creationTimestamp="2024-01-01T00:00:00Z")
    live["spec"].update(server)
    return live


SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "myapp-service"},
    "spec": {
        "type": "NodePort",
        "ports": [{"port": 80, "targetPort": 80}],
        "selector": {"app": "myapp"},
    },
}


def test_desired_records_last_applied_and_drops_status() -> None:
    body = _desired(dict(SERVICE, status={"loadBalancer": {}}), "default")
    assert "status" not in body
    assert body["metadata"]["namespace"] == "default"
    recorded = json.loads(body["metadata"]["annotations"][LAST_APPLIED])
    assert recorded["spec"] == SERVICE["spec"]
    assert "annotations" not in recorded["metadata"]


def test_unchanged_manifest_merges_to_the_live_object() -> None:
    desired = _desired(SERVICE, "default")
    live = _live_from(desired, clusterIP="10.96.0.20", sessionAffinity="None")
    live["spec"]["ports"][0].update(nodePort=30008, protocol="TCP")
    live["status"] = {"loadBalancer": {}}
    assert merged_object(live, desired) == live


def test_changed_field_keeps_server_allocated_values() -> None:
    live = _live_from(_desired(SERVICE, "default"), clusterIP="10.96.0.20")
    live["spec"]["ports"][0]["nodePort"] = 30008
    changed = json.loads(json.dumps(SERVICE))
    changed["spec"]["ports"][0]["targetPort"] = 8080
    out = merged_object(live, _desired(changed, "default"))
    assert out["spec"]["clusterIP"] == "10.96.0.20"
    assert out["spec"]["ports"] == [{"port": 80, "targetPort": 8080, "nodePort": 30008}]
    assert out["metadata"]["resourceVersion"] == "7" and out["metadata"]["uid"] == "u1"


def test_field_removed_from_manifest_is_removed_but_foreign_fields_stay() -> None:
    live = _live_from(_desired(SERVICE, "default"), clusterIP="10.96.0.20")
    live["metadata"]["labels"] = {"added-by": "someone-else"}
    smaller = json.loads(json.dumps(SERVICE))
    del smaller["spec"]["selector"]
    out = merged_object(live, _desired(smaller, "default"))
    assert "selector" not in out["spec"]
    assert out["metadata"]["labels"] == {"added-by": "someone-else"}


def test_lists_merge_by_strategic_key() -> None:
    live = {
        "containers": [
            {"name": "a", "image": "x", "imagePullPolicy": "Always"},
            {"name": "b", "image": "y"},
        ]
    }
    desired = {"containers": [{"name": "a", "image": "z"}]}
    assert merge(live, {}, desired) == {
        "containers": [{"name": "a", "image": "z", "imagePullPolicy": "Always"}]
    }
    ports_live = {"ports": [{"containerPort": 80, "protocol": "TCP"}]}
    assert merge(ports_live, {}, {"ports": [{"containerPort": 80, "name": "http"}]}) == {
        "ports": [{"containerPort": 80, "name": "http", "protocol": "TCP"}]
    }
    # Lists without a merge key are replaced.
    assert merge({"args": ["a", "b"]}, {}, {"args": ["c"]}) == {"args": ["c"]}
