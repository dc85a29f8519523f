"""Server-side Table responses: negotiation, columns, wide priorities, includeObject."""

from __future__ import annotations

import pytest

from knemu.apiserver.rest import tables
from knemu.apiserver.rest.tables import BadTableRequest

NOW = 1_700_000_000.0
T0 = "2023-11-14T22:11:41Z"  # NOW - 99 s

POD = {
    "kind": "Pod",
    "metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": T0,
                 "labels": {"app": "web"}},
    "spec": {"nodeName": "node-2", "containers": [{"name": "c"}]},
    "status": {
        "phase": "Running",
        "podIP": "10.244.2.5",
        "containerStatuses": [{"ready": True, "restartCount": 1, "state": {"running": {}}}],
    },
}  # fmt: skip
KUBECTL_ACCEPT = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,"
    "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)


@pytest.mark.parametrize(
    ("accept", "version"),
    [
        (KUBECTL_ACCEPT, "v1"),
        ("application/json;as=Table;v=v1beta1;g=meta.k8s.io", "v1beta1"),
        ("application/json", None),
        ("", None),
        ("application/json, application/json;as=Table;v=v1;g=meta.k8s.io", None),
        ("application/json;as=Table;v=v9;g=meta.k8s.io", None),
        ("application/yaml", None),
    ],
)
def test_negotiation(accept: str, version: str | None) -> None:
    assert tables.requested_version(accept) == version


def test_pod_table_has_kubectls_columns_and_wide_priorities() -> None:
    out = tables.table("Pod", [POD], NOW)
    assert out["kind"] == "Table" and out["apiVersion"] == "meta.k8s.io/v1"
    cols = [(c["name"], c["priority"]) for c in out["columnDefinitions"]]
    assert cols[:5] == [("NAME", 0), ("READY", 0), ("STATUS", 0), ("RESTARTS", 0), ("AGE", 0)]
    assert ("IP", 1) in cols and ("NODE", 1) in cols
    row = out["rows"][0]
    assert row["cells"][:6] == ["web-1", "1/1", "Running", "1", "99s", "10.244.2.5"]
    assert row["object"] == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": POD["metadata"],
    }
    assert len(row["cells"]) == len(cols)


def test_include_object() -> None:
    assert "object" not in tables.table("Pod", [POD], NOW, include_object="None")["rows"][0]
    assert tables.table("Pod", [POD], NOW, include_object="Object")["rows"][0]["object"] == POD
    with pytest.raises(BadTableRequest, match="includeObject='Everything'"):
        tables.table("Pod", [POD], NOW, include_object="Everything")


def test_event_name_is_last_and_wide_and_unknown_kinds_get_name_and_age() -> None:
    event = {"kind": "Event", "metadata": {"name": "e1"}, "reason": "Started",
             "involvedObject": {"kind": "Pod", "name": "web-1"}, "lastTimestamp": T0}  # fmt: skip
    out = tables.table("Event", [event], NOW)
    assert out["columnDefinitions"][-1] == {**out["columnDefinitions"][-1], "name": "NAME",
                                            "priority": 1}  # fmt: skip
    assert out["rows"][0]["cells"][0] == "99s" and out["rows"][0]["cells"][-1] == "e1"
    other = tables.table("Widget", [{"kind": "Widget", "metadata": {"name": "w"}}], NOW)
    assert [c["name"] for c in other["columnDefinitions"]] == ["NAME", "AGE"]


def test_watch_transform_sends_columns_once() -> None:
    transform = tables.watch_transform(KUBECTL_ACCEPT, {}, lambda: NOW)
    assert transform is not None
    first, second = transform(POD), transform(POD)
    assert first["columnDefinitions"] and not second["columnDefinitions"]
    assert len(second["rows"]) == 1
    assert tables.watch_transform("application/json", {}, lambda: NOW) is None
    with pytest.raises(BadTableRequest):
        tables.watch_transform(KUBECTL_ACCEPT, {"includeObject": "x"}, lambda: NOW)


def test_ingress_and_ingress_class_tables_have_kubectls_columns() -> None:
    ing = {
        "kind": "Ingress",
        "metadata": {"name": "cafe", "namespace": "default", "creationTimestamp": T0},
        "spec": {
            "ingressClassName": "knemu",
            "tls": [{"hosts": ["a.example"], "secretName": "s"}],
            "rules": [{"host": h} for h in ("a.example", "b.example", "c.example", "d.example")]
            + [{"http": {"paths": []}}],
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}},
    }
    out = tables.table("Ingress", [ing], NOW)
    assert [c["name"] for c in out["columnDefinitions"]] == [
        "NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"
    ]  # fmt: skip
    assert out["rows"][0]["cells"] == [
        "cafe", "knemu", "a.example,b.example,c.example + 2 more...", "192.0.2.1", "80, 443", "99s"
    ]  # fmt: skip
    ic = {
        "kind": "IngressClass",
        "metadata": {"name": "knemu", "creationTimestamp": T0},
        "spec": {"controller": "knemu.dev/ingress-controller",
                 "parameters": {"apiGroup": "k8s.example.com", "kind": "Params", "name": "p"}},
    }  # fmt: skip
    cells = tables.table("IngressClass", [ic], NOW)["rows"][0]["cells"]
    assert cells == ["knemu", "knemu.dev/ingress-controller", "Params.k8s.example.com/p", "99s"]
