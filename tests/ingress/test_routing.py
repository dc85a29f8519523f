"""The ingress routing core: Kubernetes' path-type table, host and wildcard precedence,
default backend, class ownership, backends to endpoints, TLS by SNI, forwarded headers."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from knemu.ingress import routing
from knemu.ingress.routing import Backend, Unavailable


def ing(name: str, *rules: Any, created: str = "2026-01-01T00:00:00Z", **spec: Any) -> Any:
    return {
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
        "spec": {"ingressClassName": "knemu", "rules": list(rules), **spec},
    }


def rule(host: str | None, *paths: tuple[str, str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "http": {"paths": [
            {"path": p, "pathType": t, "backend": {"service": {"name": s, "port": {"number": 80}}}}
            for p, t, s in paths
        ]}
    }  # fmt: skip
    if host is not None:
        out["host"] = host
    return out


def service_of(table: routing.RoutingTable, host: str, path: str) -> str | None:
    backend = table.route(host, path).backend
    return backend.service if backend else None


# https://kubernetes.io/docs/concepts/services-networking/ingress/#examples (the table)
PATH_TABLE = [
    ("Prefix", "/", "/aaa/bbb", True),
    ("Prefix", "/foo", "/foo", True),
    ("Exact", "/foo", "/foo", True),
    ("Exact", "/foo", "/bar", False),
    ("Exact", "/foo", "/foo/", False),
    ("Exact", "/foo/", "/foo", False),
    ("Prefix", "/foo", "/foo/", True),
    ("Prefix", "/foo/", "/foo", True),
    ("Prefix", "/aaa/bb", "/aaa/bbb", False),
    ("Prefix", "/aaa/bbb", "/aaa/bbb", True),
    ("Prefix", "/aaa/bbb/", "/aaa/bbb", True),
    ("Prefix", "/aaa/bbb", "/aaa/bbb/", True),
    ("Prefix", "/aaa/bbb", "/aaa/bbb/ccc", True),
    ("Prefix", "/aaa/bbb", "/aaa/bbbxyz", False),
    ("ImplementationSpecific", "/aaa/bbb", "/aaa/bbbxyz", True),  # nginx location: a string prefix
    ("ImplementationSpecific", "/aaa", "/bbb", False),
]


@pytest.mark.parametrize(("kind", "rule_path", "request_path", "match"), PATH_TABLE)
def test_path_types_as_kubernetes_tabulates_them(
    kind: str, rule_path: str, request_path: str, match: bool
) -> None:
    assert routing.path_matches(rule_path, kind, request_path) is match


def test_longest_path_wins_then_exact_before_prefix() -> None:
    paths = [("/", "Prefix", "root"), ("/aaa", "Prefix", "aaa"), ("/aaa/bbb", "Prefix", "bbb"),
             ("/aaa/bbb", "Exact", "exact")]  # fmt: skip
    table = routing.build([ing("a", rule(None, *paths))], "knemu", False)
    assert service_of(table, "x", "/aaa/bbb") == "exact"
    assert service_of(table, "x", "/aaa/bbb/c") == "bbb"
    assert service_of(table, "x", "/aaa/b") == "aaa"
    assert service_of(table, "x", "/zzz") == "root"


def test_hosts_exact_then_one_label_wildcard_then_hostless() -> None:
    table = routing.build([
        ing("a", rule("foo.bar.com", ("/", "Prefix", "exact-host"))),
        ing("b", rule("*.bar.com", ("/", "Prefix", "wildcard"))),
        ing("c", rule(None, ("/", "Prefix", "any"))),
    ], "knemu", False)  # fmt: skip
    assert service_of(table, "foo.bar.com", "/") == "exact-host"
    assert service_of(table, "FOO.bar.com:8080", "/") == "exact-host"  # case, port ignored
    assert service_of(table, "baz.bar.com", "/") == "wildcard"
    assert service_of(table, "a.baz.bar.com", "/") == "any"  # a wildcard covers one label
    assert service_of(table, "bar.com", "/") == "any"
    assert service_of(table, "192.0.2.7", "/") == "any"


def test_a_host_without_a_matching_path_gets_the_default_backend_or_404() -> None:
    only = ing("a", rule("cafe.example", ("/tea", "Prefix", "tea")))
    assert routing.build([only], "knemu", False).route("cafe.example", "/coffee").backend is None
    default = {"service": {"name": "fallback", "port": {"name": "http"}}}
    table = routing.build([only, ing("d", defaultBackend=default)], "knemu", False)
    route = table.route("cafe.example", "/coffee")
    assert route.backend == Backend("default", "fallback", "http")
    assert route.rule == "default backend"


def test_the_older_ingress_keeps_a_contested_path() -> None:
    young = ing("young", rule(None, ("/x", "Prefix", "young")), created="2026-02-01T00:00:00Z")
    old = ing("old", rule(None, ("/x", "Prefix", "old")), created="2026-01-01T00:00:00Z")
    assert service_of(routing.build([young, old], "knemu", False), "h", "/x") == "old"


def test_class_ownership_and_the_default_class() -> None:
    mine, theirs, classless = ing("m"), ing("t"), ing("c")
    theirs["spec"]["ingressClassName"] = "nginx"
    del classless["spec"]["ingressClassName"]
    assert [routing.owns(i, "knemu", False) for i in (mine, theirs, classless)] == [
        True, False, False
    ]  # fmt: skip
    assert routing.owns(classless, "knemu", True)
    annotated = {"metadata": {"annotations": {routing.DEFAULT_CLASS_ANNOTATION: "true"}}}
    assert routing.class_is_default(annotated) and not routing.class_is_default(None)


def service(name: str, *ports: dict[str, Any]) -> Any:
    return {"metadata": {"namespace": "default", "name": name}, "spec": {"ports": list(ports)}}


def eps_slice(svc: str, port_name: str, port: int, *eps: tuple[str, bool]) -> Any:
    return {
        "metadata": {"namespace": "default", "labels": {routing.SERVICE_NAME_LABEL: svc}},
        "ports": [{"name": port_name, "port": port}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": ok}} for ip, ok in eps],
    }


def test_backends_resolve_to_ready_endpoints_by_port_number_or_name() -> None:
    services = {
        ("default", "web"): service("web", {"name": "http", "port": 80, "targetPort": 8080})
    }
    slices = [eps_slice("web", "http", 8080, ("10.244.1.5", True), ("10.244.2.5", False)),
              eps_slice("other", "http", 9, ("10.244.9.9", True))]  # fmt: skip
    want = [("10.244.1.5", 8080)]
    assert routing.endpoints(Backend("default", "web", 80), services, slices) == want
    assert routing.endpoints(Backend("default", "web", "http"), services, slices) == want
    for backend, reason in (
        (Backend("default", "web", 81), "has no such port"),
        (Backend("default", "gone", 80), "not found"),
    ):
        found = routing.endpoints(backend, services, slices)
        assert isinstance(found, Unavailable) and reason in found.reason
    none_ready = routing.endpoints(Backend("default", "web", 80), services, [])
    assert isinstance(none_ready, Unavailable) and "no ready endpoints" in none_ready.reason


def test_tls_secret_by_sni_exact_then_wildcard_then_first() -> None:
    table = routing.build([
        ing("a", tls=[{"hosts": ["*.cafe.example"], "secretName": "wild"}]),
        ing("b", tls=[{"hosts": ["tea.cafe.example"], "secretName": "tea"}]),
    ], "knemu", False)  # fmt: skip
    assert table.secret_for("tea.cafe.example") == ("default", "tea")
    assert table.secret_for("coffee.cafe.example") == ("default", "wild")
    assert table.secret_for(None) == ("default", "wild")
    assert table.secrets() == {("default", "wild"), ("default", "tea")}
    secret = {"data": {"tls.crt": base64.b64encode(b"C").decode(),
                       "tls.key": base64.b64encode(b"K").decode()}}  # fmt: skip
    assert routing.tls_pair(secret) == (b"C", b"K")
    assert routing.tls_pair({"data": {"tls.crt": "!!"}}) is None


def test_forwarded_headers_append_the_peer() -> None:
    first = routing.forwarded_headers({}, "192.168.59.2", "http", "cafe.example", 80)
    assert first["X-Forwarded-For"] == "192.168.59.2" and first["X-Real-IP"] == "192.168.59.2"
    assert (first["X-Forwarded-Proto"], first["X-Forwarded-Host"]) == ("http", "cafe.example")
    chained = routing.forwarded_headers({"X-Forwarded-For": "203.0.113.9"}, "10.0.0.1", "https",
                                        "h", 443)  # fmt: skip
    assert chained["X-Forwarded-For"] == "203.0.113.9, 10.0.0.1"


def test_load_balancer_status_copies_the_published_services_addresses() -> None:
    svc = {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10", "ipMode": "VIP"}]}}}
    assert routing.load_balancer_status(svc) == [{"ip": "192.0.2.10"}]
    assert routing.load_balancer_status(None) == []
