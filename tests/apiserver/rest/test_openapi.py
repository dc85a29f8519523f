"""OpenAPI documents: every served kind described, refs resolve, merge keys, v2 protobuf."""

from __future__ import annotations

import json
from typing import Any

import pytest

from knemu.apiserver.rest import resources as rest_resources
from knemu.apiserver.rest.openapi import documents as openapi
from knemu.apiserver.rest.openapi.protobuf import encode_schema

DEFS = openapi.definitions()


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        own = [value["$ref"]] if "$ref" in value else []
        return own + [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


@pytest.mark.parametrize("res", rest_resources.RESOURCES, ids=lambda r: r.plural)
def test_every_served_kind_has_a_tagged_definition_and_a_list(res: rest_resources.Resource) -> None:
    name = openapi.definition_name(res)
    assert name is not None, f"{res.kind} has no OpenAPI definition"
    paths = openapi.v2_paths(res)
    if res.verbs == ("create",):  # a review
        assert [list(ops) for ops in paths.values()] == [["post"]]
        return
    assert name + "List" in DEFS
    if "patch" not in res.verbs:  # read-only (the metrics API)
        assert {m for ops in paths.values() for m in ops} == {"get"}
        return
    patch = next(ops["patch"] for p, ops in paths.items() if p.endswith("{name}"))
    assert "application/strategic-merge-patch+json" in patch["consumes"]
    assert patch["x-kubernetes-group-version-kind"]["kind"] == res.kind


def test_every_v2_ref_resolves() -> None:
    doc = openapi.v2_document()
    for ref in _refs(doc):
        assert ref.removeprefix("#/definitions/") in doc["definitions"], ref


def test_v3_documents_are_self_contained_and_use_all_of_for_described_refs() -> None:
    found = openapi.v3_documents()
    assert set(found) == {"api/v1"} | {f"apis/{gv}" for gv in rest_resources.group_versions()}
    for key, (digest, body) in found.items():
        doc = json.loads(body)
        schemas = doc["components"]["schemas"]
        for ref in _refs(doc):
            assert ref.removeprefix("#/components/schemas/") in schemas, (key, ref)
        assert openapi.v3_discovery()["paths"][key]["serverRelativeURL"].endswith(digest)
    apps = json.loads(found["apis/apps/v1"][1])["components"]["schemas"]
    spec = apps["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"]
    assert spec["allOf"] == [{"$ref": "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"}]
    assert "Desired behavior" in spec["description"]
    target = json.loads(found["api/v1"][1])["components"]["schemas"][
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
    ]
    assert target["x-kubernetes-int-or-string"] is True


def test_strategic_merge_keys_are_upstreams() -> None:
    pod_spec = DEFS["io.k8s.api.core.v1.PodSpec"]["properties"]
    assert pod_spec["containers"]["x-kubernetes-patch-merge-key"] == "name"
    assert pod_spec["containers"]["x-kubernetes-patch-strategy"] == "merge"
    container = DEFS["io.k8s.api.core.v1.Container"]["properties"]
    assert container["ports"]["x-kubernetes-patch-merge-key"] == "containerPort"
    service = DEFS["io.k8s.api.core.v1.ServiceSpec"]["properties"]
    assert service["ports"]["x-kubernetes-patch-merge-key"] == "port"


# ---- protobuf: decoded again with a minimal wire reader --------------------------------------


def _fields(data: bytes) -> list[tuple[int, bytes | int]]:
    out: list[tuple[int, bytes | int]] = []
    pos = 0

    def varint() -> int:
        nonlocal pos
        shift = value = 0
        while True:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while pos < len(data):
        key = varint()
        if key & 7 == 2:
            size = varint()
            out.append((key >> 3, data[pos : pos + size]))
            pos += size
        else:
            assert key & 7 == 0, "only varint and length-delimited fields are written"
            out.append((key >> 3, varint()))
    return out


def test_v2_protobuf_carries_every_definition_by_name() -> None:
    top = _fields(openapi.v2_protobuf())
    assert (1, b"2.0") in top
    definitions = next(v for n, v in top if n == 9)
    assert isinstance(definitions, bytes)
    names = set()
    for _, named in _fields(definitions):
        assert isinstance(named, bytes)
        names.add(dict(_fields(named))[1])
    assert names == {n.encode() for n in DEFS}


def test_v2_protobuf_schema_fields() -> None:
    schema = {
        "type": "object",
        "description": "d",
        "required": ["a"],
        "properties": {"a": {"$ref": "#/definitions/X"}},
        "additionalProperties": False,
        "x-kubernetes-group-version-kind": [{"group": "", "kind": "Pod", "version": "v1"}],
    }
    fields = _fields(encode_schema(schema))
    by_number = dict(fields)
    assert by_number[4] == b"d" and by_number[19] == b"a"
    assert _fields(by_number[22]) == [(1, b"object")]  # type: ignore[arg-type]
    assert _fields(by_number[21]) == [(2, 0)]  # type: ignore[arg-type]
    ext = dict(_fields(by_number[31]))  # type: ignore[arg-type]
    assert ext[1] == b"x-kubernetes-group-version-kind"
    yaml_text = dict(_fields(ext[2]))[2]  # type: ignore[arg-type]
    assert json.loads(yaml_text) == schema["x-kubernetes-group-version-kind"]
