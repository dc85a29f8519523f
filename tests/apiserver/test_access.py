"""Authentication and RBAC of the whole api-server over real TLS: who gets 401, who gets 403,
and what the access reviews (kubectl auth can-i / whoami) answer for users other than the
admin.  Users other than the admin get client certificates from the cluster CA, as an admin
hands them out."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from knemu import pki
from knemu.testing import apiserver_inprocess, rest_session

PODS = "/api/v1/namespaces/default/pods"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


@dataclass
class Api:
    base: str
    admin: pki.Credentials
    ca: pki.Issued

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        return await call(self.admin, method, path, **kw)


@pytest.fixture
async def rest(tmp_path: Path) -> AsyncIterator[Api]:
    async with apiserver_inprocess(tmp_path) as server:
        yield Api(server.rest_url, server.admin, server.pki.ca)


def pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}}  # fmt: skip


def user_credentials(rest: Api, name: str, groups: tuple[str, ...] = ()) -> pki.Credentials:
    """A client certificate for ``name`` issued by the cluster CA (what an admin hands out)."""
    issued = pki.issue(rest.ca, name, groups)
    return pki.Credentials(rest.base, rest.admin.ca_pem, issued.cert_pem, issued.key_pem)


async def call(creds: pki.Credentials, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    async with rest_session(creds) as http, http.request(method, creds.server + path, **kw) as r:
        text = await r.text()
        return r.status, (json.loads(text) if text.startswith("{") else text)


def binding(kind: str, name: str, role: str, subject: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", **subject}],
    }


async def test_no_credentials_is_401_with_a_status_but_health_is_public(rest: Api) -> None:
    anonymous = pki.Credentials(rest.base, rest.admin.ca_pem)
    status, body = await call(anonymous, "GET", PODS)
    assert status == 401
    assert body["kind"] == "Status" and body["reason"] == "Unauthorized" and body["code"] == 401
    assert "kubeconfig" in body["message"]
    assert (await call(anonymous, "GET", "/healthz"))[0] == 200
    bad_token = pki.Credentials(rest.base, rest.admin.ca_pem, token="not-a-token")
    status, body = await call(bad_token, "GET", "/healthz")
    assert status == 401 and "not valid" in body["message"]
    status, body = await call(bad_token.with_server(rest.base), "GET", PODS,
                              headers={"Authorization": "Basic YTpi"})  # fmt: skip
    assert status == 401 and "Bearer" in body["message"]


async def test_the_admin_token_authenticates_as_the_admin(rest: Api) -> None:
    token = pki.Credentials(rest.base, rest.admin.ca_pem, token=rest.admin.token)
    status, body = await call(
        token, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", json={}
    )
    assert status == 201
    assert body["status"]["userInfo"]["username"] == pki.ADMIN_USER
    assert pki.MASTERS_GROUP in body["status"]["userInfo"]["groups"]


async def test_a_certificate_from_another_ca_is_refused_at_the_handshake(rest: Api) -> None:
    other = pki.issue(pki.create_ca("elsewhere"), pki.ADMIN_USER, [pki.MASTERS_GROUP])
    forged = pki.Credentials(rest.base, rest.admin.ca_pem, other.cert_pem, other.key_pem)
    with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
        status, _ = await call(forged, "GET", PODS)
        assert status != 200  # a server that let the handshake pass must still refuse


async def test_a_user_gets_403_until_a_binding_grants_view(rest: Api) -> None:
    viewer = user_credentials(rest, "viewer", ("qa",))
    status, body = await call(viewer, "GET", PODS)
    assert status == 403 and body["reason"] == "Forbidden"
    assert 'User "viewer" cannot list resource "pods"' in body["message"]
    assert 'in the namespace "default"' in body["message"]

    rb = binding("RoleBinding", "viewer-view", "view", {"kind": "User", "name": "viewer"})
    status, _ = await rest.call("POST", f"{RBAC}/namespaces/default/rolebindings", json=rb)
    assert status == 201
    assert (await call(viewer, "GET", PODS))[0] == 200
    assert (await call(viewer, "GET", PODS + "?watch=true&timeoutSeconds=1"))[0] == 200
    assert (await call(viewer, "GET", "/api/v1/namespaces/kube-system/pods"))[0] == 403
    assert (await call(viewer, "POST", PODS, json=pod("x")))[0] == 403
    assert (await call(viewer, "GET", "/api/v1/namespaces/default/secrets"))[0] == 403
    assert (await call(viewer, "GET", "/api/v1/namespaces/default/pods/x/exec"))[0] == 403
    # discovery and the self-reviews are for every authenticated user
    assert (await call(viewer, "GET", "/apis"))[0] == 200

    crb = binding("ClusterRoleBinding", "qa-edit", "edit", {"kind": "Group", "name": "qa"})
    assert (await rest.call("POST", f"{RBAC}/clusterrolebindings", json=crb))[0] == 201
    assert (await call(viewer, "POST", PODS, json=pod("x")))[0] == 201
    assert (await call(viewer, "GET", "/api/v1/namespaces/kube-system/secrets"))[0] == 200
    # edit does not extend to RBAC itself: no escalation through a binding of one's own
    status, _ = await call(viewer, "POST", f"{RBAC}/clusterrolebindings",
                           json=binding("ClusterRoleBinding", "mine", "cluster-admin",
                                        {"kind": "User", "name": "viewer"}))  # fmt: skip
    assert status == 403


async def test_can_i_whoami_and_subject_access_review_tell_the_truth(rest: Api) -> None:
    viewer = user_credentials(rest, "viewer", ("qa",))
    rb = binding("RoleBinding", "viewer-view", "view", {"kind": "User", "name": "viewer"})
    await rest.call("POST", f"{RBAC}/namespaces/default/rolebindings", json=rb)

    async def can_i(verb: str, resource: str, namespace: str = "default") -> bool:
        spec = {"resourceAttributes": {"verb": verb, "resource": resource,
                                       "namespace": namespace}}  # fmt: skip
        status, body = await call(viewer, "POST", SSAR, json={"spec": spec})
        assert status == 201, body
        allowed: bool = body["status"]["allowed"]
        return allowed

    assert await can_i("list", "pods") and await can_i("get", "services")
    assert not await can_i("delete", "pods") and not await can_i("list", "secrets")
    assert not await can_i("list", "pods", "kube-system")

    _, who = await call(viewer, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                        json={})  # fmt: skip
    assert who["status"]["userInfo"] == {
        "username": "viewer", "groups": ["qa", "system:authenticated"]
    }  # fmt: skip

    _, rules = await call(viewer, "POST", "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
                          json={"spec": {"namespace": "default"}})  # fmt: skip
    listed = {r for rule in rules["status"]["resourceRules"] for r in rule["resources"]}
    assert "pods" in listed and "secrets" not in listed

    sar = {"spec": {"user": "viewer", "groups": ["qa"],
                    "resourceAttributes": {"verb": "list", "resource": "pods",
                                           "namespace": "default"}}}  # fmt: skip
    path = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
    status, body = await rest.call("POST", path, json=sar)
    assert status == 201 and body["status"]["allowed"] is True
    assert "RoleBinding" in body["status"]["reason"]
    assert (await call(viewer, "POST", path, json=sar))[0] == 403  # only for the privileged


async def test_rbac_objects_are_validated(rest: Api) -> None:
    bad_rule = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "r"}, "rules": [{"verbs": ["get"],
                                                      "nonResourceURLs": ["/x"]}]}  # fmt: skip
    status, body = await rest.call("POST", f"{RBAC}/namespaces/default/roles", json=bad_rule)
    assert status == 422, body
    assert body["details"]["causes"][0]["field"] == "rules[0].nonResourceURLs"
    rb = binding("RoleBinding", "b", "view", {"kind": "User", "name": "u"})
    await rest.call("POST", f"{RBAC}/namespaces/default/rolebindings", json=rb)
    rb["roleRef"]["name"] = "edit"
    status, body = await rest.call("PUT", f"{RBAC}/namespaces/default/rolebindings/b", json=rb)
    assert status == 422 and "roleRef" in body["message"]


async def test_impersonation_is_refused_not_ignored(rest: Api) -> None:
    status, body = await rest.call("GET", PODS, headers={"Impersonate-User": "jane"})
    assert status == 403 and "impersonation" in body["message"]


async def test_a_namespace_admin_cannot_bind_what_it_does_not_hold(rest: Api) -> None:
    ns_admin = user_credentials(rest, "nadia")
    rb = binding("RoleBinding", "nadia-admin", "admin", {"kind": "User", "name": "nadia"})
    assert (await rest.call("POST", f"{RBAC}/namespaces/default/rolebindings", json=rb))[0] == 201
    view = binding("RoleBinding", "friend-view", "view", {"kind": "User", "name": "friend"})
    path = f"{RBAC}/namespaces/default/rolebindings"
    assert (await call(ns_admin, "POST", path, json=view))[0] == 201
    everything = binding("RoleBinding", "friend-all", "cluster-admin",
                         {"kind": "User", "name": "friend"})  # fmt: skip
    status, body = await call(ns_admin, "POST", path, json=everything)
    assert status == 403 and "privilege escalation" in body["message"]
    # nor by turning an allowed binding into another one (roleRef is immutable anyway), nor
    # through a Role that grants more than the admin holds
    grab = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "grab"},
            "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["nodes"]}]}  # fmt: skip
    status, body = await call(ns_admin, "POST", f"{RBAC}/namespaces/default/roles", json=grab)
    assert status == 403 and "get nodes" in body["message"]
