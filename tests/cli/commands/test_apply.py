"""kubectl-apply style three-way merge, and documents naming one object applied in order (pure)."""

from __future__ import annotations

import json
from pathlib import Path

from knemu.cli.commands.apply import (
    Planned,
    _chain,
    _desired,
    _final_steps,
    _plan,
    merge,
    merged_object,
)
from knemu.cli.manifests import LAST_APPLIED, Document, load_paths

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


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


def _plans(*docs: Document) -> list[Planned]:
    plans = [_plan(doc, None) for doc in docs]
    _chain(plans)
    return plans


def test_documents_naming_one_object_apply_in_order_and_the_last_wins() -> None:
    plans = _plans(*load_paths([str(EXAMPLES / "seed-002")]))
    assert [p.doc.source.rsplit("-", 1)[-1] for p in plans] == [
        "clusterip.yaml",
        "loadbalancer.yaml",
        "nodeport.yaml",
    ]
    (final,) = _final_steps(plans)
    assert final is plans[2] and final.earlier == plans[:2]
    created = final.target(None)
    # The LoadBalancer version's clusterIP is gone: its last-applied listed it, the next did not.
    assert created["spec"] == {
        "type": "NodePort",
        "ports": [{"targetPort": 80, "port": 80, "nodePort": 30008}],
        "selector": {"app": "myapp", "type": "frontend"},
    }
    assert created == plans[2].desired and "status" not in created
    # Each step is what kubectl would send at that point: the LoadBalancer step sets its IP.
    assert plans[1].target(None)["spec"]["clusterIP"] == "10.0.171.239"


def test_repeated_documents_merge_over_the_live_object_in_order() -> None:
    live = _live_from(_desired(SERVICE, "default"), clusterIP="10.96.0.20", sessionAffinity="None")
    sticky = json.loads(json.dumps(SERVICE))
    sticky["spec"]["sessionAffinity"] = "ClientIP"
    retargeted = json.loads(json.dumps(SERVICE))
    retargeted["spec"]["ports"][0]["targetPort"] = 8080
    plans = _plans(Document("m.yaml", 1, sticky), Document("m.yaml", 2, retargeted))
    out = plans[1].target(live)
    assert out == merged_object(merged_object(live, plans[0].desired), plans[1].desired)
    # Document 1 took sessionAffinity over from the server; document 2 drops it (the server
    # defaults it again), where document 2 alone would have kept the live value.
    assert "sessionAffinity" not in out["spec"]
    assert merged_object(live, plans[1].desired)["spec"]["sessionAffinity"] == "None"
    assert out["spec"]["ports"] == [{"port": 80, "targetPort": 8080}]
    assert out["spec"]["clusterIP"] == "10.96.0.20" and out["metadata"]["resourceVersion"] == "7"
    assert json.loads(out["metadata"]["annotations"][LAST_APPLIED])["spec"] == retargeted["spec"]


def test_a_repeated_object_is_applied_where_it_first_appears() -> None:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kt"}}
    service = dict(SERVICE, metadata={"name": "web", "namespace": "kt"})
    labelled = dict(namespace, metadata={"name": "kt", "labels": {"team": "a"}})
    docs = [Document("m.yaml", i, obj) for i, obj in enumerate((namespace, service, labelled), 1)]
    plans = _plans(*docs)
    assert [(p.rt.kind, p.doc.index) for p in _final_steps(plans)] == [
        ("Namespace", 3),
        ("Service", 2),
    ]
