"""Request attributes from method and path, as kube-apiserver's RequestInfoFactory reads them."""

from __future__ import annotations

import pytest

from knemu.apiserver.auth.attributes import request_attributes
from knemu.apiserver.auth.authn import UserInfo

USER = UserInfo("u")
NS = "/api/v1/namespaces/ns"

CASES = [
    # method, path, query, (verb, resource_request, group, namespace, resource, sub, name)
    ("GET", "/api/v1/pods", {}, ("list", True, "", "", "pods", "", "")),
    ("GET", NS + "/pods", {}, ("list", True, "", "ns", "pods", "", "")),
    ("GET", NS + "/pods", {"watch": "true"}, ("watch", True, "", "ns", "pods", "", "")),
    ("GET", NS + "/pods/p", {}, ("get", True, "", "ns", "pods", "", "p")),
    ("GET", NS + "/pods/p/log", {}, ("get", True, "", "ns", "pods", "log", "p")),
    ("GET", NS + "/pods/p/exec", {}, ("create", True, "", "ns", "pods", "exec", "p")),
    ("POST", NS + "/pods/p/portforward", {},
     ("create", True, "", "ns", "pods", "portforward", "p")),
    ("POST", NS + "/pods", {}, ("create", True, "", "ns", "pods", "", "")),
    ("PUT", NS + "/pods/p/status", {}, ("update", True, "", "ns", "pods", "status", "p")),
    ("PATCH", "/apis/apps/v1/namespaces/ns/deployments/d/scale", {},
     ("patch", True, "apps", "ns", "deployments", "scale", "d")),
    ("DELETE", NS + "/pods", {}, ("deletecollection", True, "", "ns", "pods", "", "")),
    ("DELETE", NS + "/pods/p", {}, ("delete", True, "", "ns", "pods", "", "p")),
    ("GET", "/api/v1/namespaces", {}, ("list", True, "", "", "namespaces", "", "")),
    ("GET", NS, {}, ("get", True, "", "ns", "namespaces", "", "ns")),
    ("PUT", NS + "/status", {}, ("update", True, "", "ns", "namespaces", "status", "ns")),
    ("GET", "/api/v1/nodes/n1/proxy/healthz", {}, ("get", True, "", "", "nodes", "proxy", "n1")),
    ("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles", {},
     ("list", True, "rbac.authorization.k8s.io", "", "clusterroles", "", "")),
    ("GET", "/api/v1", {}, ("get", False, "", "", "", "", "")),
    ("GET", "/apis", {}, ("get", False, "", "", "", "", "")),
    ("GET", "/healthz", {}, ("get", False, "", "", "", "", "")),
    ("POST", "/console/api/chaos", {}, ("post", False, "", "", "", "", "")),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "query", "want"), CASES)
def test_attributes(
    method: str, path: str, query: dict[str, str], want: tuple[object, ...]
) -> None:
    a = request_attributes(USER, method, path, query)
    got = (a.verb, a.resource_request, a.api_group, a.namespace, a.resource, a.subresource, a.name)
    assert got == want
    assert a.path == path and a.user is USER
