"""NetworkPolicy validation: one bad input per rule (field path and reason, as
pkg/apis/networking/validation words them), and the shipped examples pass."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from knemu.errors import Invalid

from ..cluster import Cluster

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "network-policy"


def _np(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "np"},
        "spec": {"podSelector": {}, **spec},
    }


def _from(*peers: Any) -> dict[str, Any]:
    return _np(ingress=[{"from": list(peers)}])


def _ports(*ports: Any) -> dict[str, Any]:
    return _np(ingress=[{"ports": list(ports)}])


def _expr(**expr: Any) -> dict[str, Any]:
    return _np(podSelector={"matchExpressions": [expr]})


FROM0 = "spec.ingress[0].from[0]"
PORT0 = "spec.ingress[0].ports[0]"
CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("podSelector is required", {**_np(), "spec": {}}, "spec.podSelector", "Required value"),
    ("policy name", {**_np(), "metadata": {"name": "Bad_Name"}}, "metadata.name", "RFC 1123"),
    (
        "unknown policyTypes",
        _np(policyTypes=["Ingress", "Sideways"]),
        "spec.policyTypes[1]",
        'Unsupported value: "Sideways": supported values: "Egress", "Ingress"',
    ),
    (
        "at most two policyTypes",
        _np(policyTypes=["Ingress", "Egress", "Ingress"]),
        "spec.policyTypes",
        "may not specify more than two policyTypes",
    ),
    (
        "selector operator",
        _expr(key="app", operator="Like", values=["a"]),
        "spec.podSelector.matchExpressions[0].operator",
        "Unsupported value",
    ),
    (
        "In needs values",
        _expr(key="app", operator="In", values=[]),
        "spec.podSelector.matchExpressions[0].values",
        "must be specified when `operator` is 'In' or 'NotIn'",
    ),
    (
        "Exists takes no values",
        _expr(key="app", operator="Exists", values=["x"]),
        "spec.podSelector.matchExpressions[0].values",
        "may not be specified",
    ),
    (
        "selector key",
        _expr(key="bad key!", operator="Exists"),
        "spec.podSelector.matchExpressions[0].key",
        "name part must consist",
    ),
    (
        "selector value",
        _expr(key="app", operator="In", values=["-x-"]),
        "spec.podSelector.matchExpressions[0].values[0]",
        "a valid label must be",
    ),
    (
        "matchLabels in a peer",
        _from({"namespaceSelector": {"matchLabels": {"team": "-a"}}}),
        f"{FROM0}.namespaceSelector.matchLabels",
        "a valid label must be",
    ),
    ("an empty peer", _from({}), FROM0, "must specify a peer"),
    (
        "ipBlock with a selector",
        _from({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}),
        FROM0,
        "may not specify both ipBlock and another peer",
    ),
    (
        "bad CIDR",
        _from({"ipBlock": {"cidr": "10.0.0.0/33"}}),
        f"{FROM0}.ipBlock.cidr",
        "must be a valid CIDR value",
    ),
    ("missing CIDR", _from({"ipBlock": {}}), f"{FROM0}.ipBlock.cidr", "Required value"),
    (
        "except outside cidr",
        _from({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}),
        f"{FROM0}.ipBlock.except[0]",
        "must be a strict subset of `cidr`",
    ),
    (
        "except as large as cidr",
        _from({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/16"]}}),
        f"{FROM0}.ipBlock.except[0]",
        "must be a strict subset of `cidr`",
    ),
    (
        "except of another family",
        _from({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["2001:db8::/64"]}}),
        f"{FROM0}.ipBlock.except[0]",
        "must be a strict subset of `cidr`",
    ),
    (
        "bad except",
        _from({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["ten"]}}),
        f"{FROM0}.ipBlock.except[0]",
        "must be a valid CIDR value",
    ),
    ("port range", _ports({"port": 70000}), f"{PORT0}.port", "between 1 and 65535"),
    ("port zero", _ports({"port": 0}), f"{PORT0}.port", "between 1 and 65535"),
    (
        "port name",
        _ports({"port": "http_port"}),
        f"{PORT0}.port",
        "alpha-numeric characters (a-z, 0-9), and hyphens",
    ),
    ("protocol", _ports({"port": 80, "protocol": "HTTP"}), f"{PORT0}.protocol", '"SCTP"'),
    (
        "endPort below port",
        _ports({"port": 9000, "endPort": 8000}),
        f"{PORT0}.endPort",
        "must be greater than or equal to `port`",
    ),
    (
        "endPort range",
        _ports({"port": 9000, "endPort": 65536}),
        f"{PORT0}.endPort",
        "between 1 and 65535",
    ),
    (
        "endPort with a named port",
        _ports({"port": "http", "endPort": 90}),
        f"{PORT0}.endPort",
        "may not be specified when `port` is non-numeric",
    ),
    (
        "endPort without a port",
        _ports({"endPort": 90}),
        f"{PORT0}.endPort",
        "may not be specified when `port` is not specified",
    ),
    (
        "egress peers are checked too",
        _np(egress=[{"to": [{"ipBlock": {"cidr": "nope"}}]}]),
        "spec.egress[0].to[0].ipBlock.cidr",
        "must be a valid CIDR value",
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


def test_every_error_at_once(cluster: Cluster) -> None:
    obj = _np(
        policyTypes=["Up"],
        ingress=[{"from": [{}], "ports": [{"port": 0}]}],
        egress=[{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}]}],
    )
    with pytest.raises(Invalid) as info:
        cluster.admission.admit_create(obj, cluster.now)
    assert {c.field for c in info.value.causes} == {
        "spec.policyTypes[0]",
        "spec.ingress[0].from[0]",
        "spec.ingress[0].ports[0].port",
        "spec.egress[0].to[0].ipBlock.except[0]",
    }


@pytest.mark.parametrize(
    "spec",
    [
        {"podSelector": {}},
        {"podSelector": {}, "ingress": [{}], "egress": []},  # allow all in, deny all out
        {
            "podSelector": {"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]},
            "ingress": [
                {
                    "from": [
                        {"ipBlock": {"cidr": "10.0.0.1/8", "except": ["10.1.0.0/16"]}},
                        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"a": "b"}}},
                    ],
                    "ports": [{"port": "http"}, {"protocol": "UDP"}, {"port": 80, "endPort": 90}],
                }
            ],
        },
    ],
)
def test_accepts_valid_policies(cluster: Cluster, spec: dict[str, Any]) -> None:
    stored = cluster.apply({**_np(), "spec": spec})
    assert stored["spec"]["policyTypes"][0] == "Ingress"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_the_examples_are_valid(cluster: Cluster, path: Path) -> None:
    for obj in yaml.safe_load_all(path.read_text()):
        if obj is None:
            continue
        ns = obj.get("metadata", {}).get("namespace")
        if ns and cluster.store.get("Namespace", "", ns) is None:
            cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        cluster.apply(obj)
