"""Which resource a URL names (knemu.apiserver.rest.paths)."""

from __future__ import annotations

import pytest

from knemu.apiserver.rest.paths import parse_target
from knemu.errors import NotFound


def test_parse_target() -> None:
    t = parse_target("v1", "namespaces/ns1/pods/p/status")
    assert (t.res.kind, t.namespace, t.name, t.sub) == ("Pod", "ns1", "p", "status")
    t = parse_target("v1", "namespaces/ns1")
    assert (t.res.kind, t.namespace, t.name) == ("Namespace", "", "ns1")
    t = parse_target("v1", "namespaces/ns1/status")
    assert (t.res.kind, t.name, t.sub) == ("Namespace", "ns1", "status")
    t = parse_target("v1", "pods")
    assert (t.res.kind, t.namespace, t.name) == ("Pod", None, "")
    t = parse_target("apps/v1", "namespaces/d/deployments/web/scale")
    assert (t.res.kind, t.sub) == ("Deployment", "scale")
    for bad in ("widgets", "namespaces/d/pods/p/scale", "namespaces/d/nodes", "pods/a/b/c/d"):
        with pytest.raises(NotFound):
            parse_target("v1", bad)
