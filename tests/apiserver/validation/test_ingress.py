"""Ingress and IngressClass validation: one bad input per rule (field path and reason, as
pkg/apis/networking/validation words them), and the shipped example passes."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from knemu.errors import Invalid

from ..cluster import Cluster, load_yaml

SVC = {"service": {"name": "web", "port": {"number": 80}}}


def _ing(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "ing"},
        "spec": spec,
    }


def _path(**entry: Any) -> dict[str, Any]:
    return _ing(rules=[{"http": {"paths": [{"pathType": "Prefix", "backend": SVC, **entry}]}}])


def _class(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": "knemu"},
        "spec": spec,
    }


P0 = "spec.rules[0].http.paths[0]"
CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("no rules nor default", _ing(), "spec", "either `defaultBackend` or `rules`"),
    ("pathType required", _path(pathType=None, path="/"), f"{P0}.pathType", "Required value"),
    ("pathType values", _path(pathType="Regex", path="/"), f"{P0}.pathType", '"Exact"'),
    ("absolute path", _path(path="coffee"), f"{P0}.path", "must be an absolute path"),
    ("Prefix needs a path", _path(path=""), f"{P0}.path", "must be an absolute path"),
    ("no //", _path(path="/a//b"), f"{P0}.path", "must not contain '//'"),
    ("no /..", _path(path="/a/.."), f"{P0}.path", "must not contain '/..'"),
    ("no %2f", _path(path="/a%2fb"), f"{P0}.path", "must not contain '%2f'"),
    ("backend required", _path(path="/", backend=None), f"{P0}.backend", "Required value"),
    (
        "service port name or number",
        _path(path="/", backend={"service": {"name": "web", "port": {}}}),
        f"{P0}.backend.service.port",
        "port name or number is required",
    ),
    (
        "not both port name and number",
        _path(path="/", backend={"service": {"name": "web", "port": {"name": "h", "number": 8}}}),
        f"{P0}.backend.service.port",
        "cannot set both port name & port number",
    ),
    (
        "port range",
        _path(path="/", backend={"service": {"name": "web", "port": {"number": 70000}}}),
        f"{P0}.backend.service.port.number",
        "between 1 and 65535",
    ),
    (
        "service name",
        _path(path="/", backend={"service": {"name": "Web", "port": {"number": 80}}}),
        f"{P0}.backend.service.name",
        "DNS-1035 label",
    ),
    (
        "service or resource",
        _path(path="/", backend={**SVC, "resource": {"kind": "Bucket", "name": "b"}}),
        f"{P0}.backend",
        "cannot set both service and resource backends",
    ),
    ("host is no IP", _ing(rules=[{"host": "192.0.2.1"}]), "spec.rules[0].host", "not an IP"),
    ("host name", _ing(rules=[{"host": "Cafe.example"}]), "spec.rules[0].host", "RFC 1123"),
    (
        "wildcard is one leading label",
        _ing(rules=[{"host": "a.*.example"}]),
        "spec.rules[0].host",
        "RFC 1123",
    ),
    (
        "tls hosts",
        _ing(defaultBackend=SVC, tls=[{"hosts": ["bad_host"], "secretName": "s"}]),
        "spec.tls[0].hosts[0]",
        "RFC 1123",
    ),
    ("class controller", _class(), "spec.controller", "Required value"),
    ("controller path", _class(controller="knemu"), "spec.controller", "domain-prefixed path"),
    (
        "namespaced parameters need a namespace",
        _class(controller="k.io/c", parameters={"kind": "K", "name": "n", "scope": "Namespace"}),
        "spec.parameters.namespace",
        "Required value",
    ),
]


@pytest.mark.parametrize(("what", "obj", "field", "reason"), CASES, ids=[c[0] for c in CASES])
def test_rejects(cluster: Cluster, what: str, obj: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(Invalid) as info:
        cluster.admission.admit_create(copy.deepcopy(obj), cluster.now)
    causes = {c.field: c.message for c in info.value.causes}
    assert field in causes, f"{what}: expected an error at {field}, got {causes}"
    assert reason in causes[field], f"{what}: {causes[field]!r} does not say {reason!r}"
    assert info.value.http_status == 422


def test_wildcard_hosts_exact_paths_and_implementation_specific_are_accepted(
    cluster: Cluster,
) -> None:
    obj = _ing(
        defaultBackend=SVC,
        tls=[{"hosts": ["*.cafe.example"], "secretName": "cafe-tls"}],
        rules=[
            {"host": "*.cafe.example", "http": {"paths": [
                {"path": "/tea", "pathType": "Exact", "backend": SVC},
                {"pathType": "ImplementationSpecific", "backend": SVC},
            ]}},
        ],
    )  # fmt: skip
    created = cluster.apply(obj)
    assert created["spec"]["rules"][0]["host"] == "*.cafe.example"


def test_ingress_class_controller_is_immutable(cluster: Cluster) -> None:
    cluster.apply(_class(controller="knemu.dev/ingress"))
    old = cluster.store.get("IngressClass", "", "knemu")
    assert old is not None and old["metadata"].get("namespace", "") == ""
    new = copy.deepcopy(old)
    new["spec"]["controller"] = "other.io/ingress"
    with pytest.raises(Invalid) as info:
        cluster.admission.admit_update(new, old, cluster.now)
    assert "field is immutable" in info.value.causes[0].message


def test_wrongly_typed_fields_are_named(cluster: Cluster) -> None:
    with pytest.raises(Invalid) as info:
        cluster.admission.admit_create(_path(path=["/"]), cluster.now)
    assert f"{P0}.path" in {c.field for c in info.value.causes}


def test_the_cafe_example_passes(cluster: Cluster) -> None:
    for obj in load_yaml("ingress/cafe.yaml"):
        cluster.apply(obj)
    ing = cluster.store.get("Ingress", "default", "cafe")
    assert ing is not None and ing["spec"]["ingressClassName"] == "knemu"
