"""The RBAC evaluator over every kind of rule and binding, and the default roles."""

from __future__ import annotations

from typing import Any

import pytest

from knemu.apiserver.auth import defaults
from knemu.apiserver.auth.attributes import Attributes, request_attributes
from knemu.apiserver.auth.authn import AUTHENTICATED, UNAUTHENTICATED, UserInfo
from knemu.apiserver.auth.rbac import Policy, escalation, forbidden_message

RBAC = "rbac.authorization.k8s.io"


def role(kind: str, name: str, rules: list[dict[str, Any]], ns: str = "") -> dict[str, Any]:
    meta = {"name": name, **({"namespace": ns} if ns else {})}
    return {"kind": kind, "metadata": meta, "rules": rules}


def bind(kind: str, name: str, ref: tuple[str, str], subjects: list[dict[str, str]],
         ns: str = "") -> dict[str, Any]:  # fmt: skip
    meta = {"name": name, **({"namespace": ns} if ns else {})}
    return {"kind": kind, "metadata": meta, "subjects": subjects,
            "roleRef": {"apiGroup": RBAC, "kind": ref[0], "name": ref[1]}}  # fmt: skip


def policy(*objs: dict[str, Any]) -> Policy:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for obj in [*defaults.default_objects(), *objs]:
        by_kind.setdefault(obj["kind"], []).append(obj)
    return Policy(by_kind)


def can(p: Policy, user: UserInfo, method: str, path: str, **query: str) -> bool:
    return p.authorize(request_attributes(user, method, path, query))[0]


ALICE = UserInfo("alice", ("dev", AUTHENTICATED))
PODS = "/api/v1/namespaces/team/pods"


def test_nothing_is_allowed_without_a_binding_but_discovery_and_self_reviews() -> None:
    p = policy()
    assert not can(p, ALICE, "GET", PODS)
    assert not can(p, ALICE, "GET", "/api/v1/nodes")
    assert can(p, ALICE, "GET", "/apis")
    assert can(p, ALICE, "GET", "/apis/apps/v1")
    assert can(p, ALICE, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
    assert not can(p, ALICE, "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews")
    anonymous = UserInfo("system:anonymous", (UNAUTHENTICATED,))
    assert can(p, anonymous, "GET", "/healthz") and not can(p, anonymous, "GET", "/apis")


def test_masters_are_allowed_everything() -> None:
    admin = UserInfo("root", ("system:masters",))
    p = Policy({})  # not even a role exists
    assert can(p, admin, "DELETE", "/api/v1/nodes/n1") and can(p, admin, "POST", "/x")


def test_a_rolebinding_applies_in_its_namespace_only() -> None:
    p = policy(bind("RoleBinding", "b", ("ClusterRole", "view"),
                    [{"kind": "User", "name": "alice"}], ns="team"))  # fmt: skip
    assert can(p, ALICE, "GET", PODS) and can(p, ALICE, "GET", PODS, watch="true")
    assert can(p, ALICE, "GET", PODS + "/p/log")
    assert not can(p, ALICE, "GET", "/api/v1/namespaces/other/pods")
    assert not can(p, ALICE, "GET", "/api/v1/pods")  # all namespaces is cluster scope
    assert not can(p, ALICE, "POST", PODS)
    assert not can(p, ALICE, "GET", PODS + "/p/exec")
    assert not can(p, ALICE, "GET", "/api/v1/namespaces/team/secrets")


def test_group_and_serviceaccount_subjects_and_a_namespaced_role() -> None:
    r = role(
        "Role",
        "pod-reader",
        [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["p1"]}],
        "team",
    )
    p = policy(
        r,
        bind("RoleBinding", "b1", ("Role", "pod-reader"),
             [{"kind": "Group", "name": "dev"}], "team"),
        bind("RoleBinding", "b2", ("Role", "pod-reader"),
             [{"kind": "ServiceAccount", "name": "bot", "namespace": "ci"}], "team"),
    )  # fmt: skip
    assert can(p, ALICE, "GET", PODS + "/p1") and not can(p, ALICE, "GET", PODS + "/p2")
    assert not can(p, ALICE, "GET", PODS)  # resourceNames never grant list
    bot = UserInfo("system:serviceaccount:ci:bot", ("system:serviceaccounts", AUTHENTICATED))
    assert can(p, bot, "GET", PODS + "/p1")
    # a RoleBinding cannot reach a Role of another namespace
    p2 = policy(r, bind("RoleBinding", "b", ("Role", "pod-reader"),
                        [{"kind": "User", "name": "alice"}], "elsewhere"))  # fmt: skip
    assert not can(p2, ALICE, "GET", PODS + "/p1")


def test_wildcards_subresources_and_non_resource_urls() -> None:
    rules = [{"verbs": ["*"], "apiGroups": ["apps"], "resources": ["*/scale"]},
             {"verbs": ["get"], "nonResourceURLs": ["/console/*", "/metrics"]}]  # fmt: skip
    p = policy(role("ClusterRole", "scaler", rules),
               bind("ClusterRoleBinding", "b", ("ClusterRole", "scaler"),
                    [{"kind": "User", "name": "alice"}]))  # fmt: skip
    assert can(p, ALICE, "PATCH", "/apis/apps/v1/namespaces/x/deployments/d/scale")
    assert not can(p, ALICE, "PATCH", "/apis/apps/v1/namespaces/x/deployments/d")
    assert can(p, ALICE, "GET", "/console/api/events") and can(p, ALICE, "GET", "/metrics")
    assert not can(p, ALICE, "POST", "/console/api/chaos") and not can(p, ALICE, "GET", "/x")


def test_edit_writes_workloads_and_execs_but_not_rbac() -> None:
    p = policy(bind("ClusterRoleBinding", "b", ("ClusterRole", "edit"),
                    [{"kind": "User", "name": "alice"}]))  # fmt: skip
    assert can(p, ALICE, "POST", PODS) and can(p, ALICE, "GET", PODS + "/p/exec")
    assert can(p, ALICE, "DELETE", "/apis/apps/v1/namespaces/x/deployments/d")
    assert can(p, ALICE, "PUT", "/api/v1/namespaces/x/secrets/s")
    assert not can(p, ALICE, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings")
    assert not can(p, ALICE, "DELETE", "/api/v1/nodes/n1")


@pytest.mark.parametrize("bad", [5, "x", [5], {"kind": "User"}, None])
def test_malformed_objects_grant_nothing_and_do_not_crash(bad: Any) -> None:
    objs = {"ClusterRole": [{"kind": "ClusterRole", "metadata": {"name": "r"}, "rules": [bad]}],
            "ClusterRoleBinding": [{"kind": "ClusterRoleBinding", "metadata": {"name": "b"},
                                    "roleRef": bad, "subjects": [bad]}]}  # fmt: skip
    assert not can(Policy(objs), ALICE, "GET", PODS)


def test_rules_review_and_the_forbidden_message() -> None:
    p = policy(bind("RoleBinding", "b", ("ClusterRole", "view"),
                    [{"kind": "User", "name": "alice"}], ns="team"))  # fmt: skip
    resource, other = p.rules_for(ALICE, "team")
    assert any("pods" in r["resources"] and "list" in r["verbs"] for r in resource)
    assert any("/apis/*" in r["nonResourceURLs"] for r in other)
    assert not any("pods" in r["resources"] for r in p.rules_for(ALICE, "other")[0])
    attrs = Attributes(ALICE, "delete", True, "", "", "v1", "team", "pods", "", "p")
    assert forbidden_message(attrs).startswith(
        'User "alice" cannot delete resource "pods" in API group "" in the namespace "team"'
    )


def test_writing_roles_and_bindings_cannot_escalate() -> None:
    p = policy(bind("RoleBinding", "b", ("ClusterRole", "admin"),
                    [{"kind": "User", "name": "alice"}], ns="team"))  # fmt: skip

    def binding_to(role: str, kind: str = "RoleBinding", ns: str = "team") -> dict[str, Any]:
        return bind(kind, "x", ("ClusterRole", role), [{"kind": "User", "name": "bob"}], ns)

    assert escalation(p, ALICE, binding_to("view")) == ""
    assert escalation(p, ALICE, binding_to("edit")) == ""
    why = escalation(p, ALICE, binding_to("cluster-admin"))
    assert "privilege escalation" in why and "'bind' verb" in why
    assert escalation(p, ALICE, binding_to("view", ns="other")) != ""  # admin only in team
    assert escalation(p, ALICE, binding_to("view", "ClusterRoleBinding", "")) != ""
    reader = role("Role", "r", [{"verbs": ["get", "list"], "apiGroups": [""],
                                 "resources": ["pods", "pods/log"]}], "team")  # fmt: skip
    assert escalation(p, ALICE, reader) == ""
    nodes = role("Role", "r", [{"verbs": ["get"], "apiGroups": [""], "resources": ["nodes"]}],
                 "team")  # fmt: skip
    assert "get nodes" in escalation(p, ALICE, nodes)
    wild = role("Role", "r", [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}], "team")
    assert escalation(p, ALICE, wild) != ""  # "*" is covered only by "*"
    # the bind verb on that one role lets a user bind it without holding it
    binder = role("ClusterRole", "binder", [{"verbs": ["bind"], "apiGroups": [RBAC],
                                             "resources": ["clusterroles"],
                                             "resourceNames": ["cluster-admin"]}])  # fmt: skip
    p2 = policy(binder, bind("ClusterRoleBinding", "c", ("ClusterRole", "binder"),
                             [{"kind": "User", "name": "alice"}]))  # fmt: skip
    assert escalation(p2, ALICE, binding_to("cluster-admin")) == ""
    assert escalation(p2, ALICE, binding_to("edit")) != ""
    assert escalation(p, UserInfo("root", ("system:masters",)), binding_to("cluster-admin")) == ""
    assert escalation(p, ALICE, {"kind": "Pod", "metadata": {}}) == ""
