"""The roles and bindings every cluster starts with: kube-apiserver's bootstrap policy
(plugin/pkg/auth/authorizer/rbac/bootstrappolicy), trimmed to the resources knemu serves.

* ``cluster-admin``: everything; bound to the group ``system:masters``.
* ``admin`` / ``edit`` / ``view``: the user-facing roles (bind them with a RoleBinding to
  grant them in one namespace).  ``view`` reads everything but Secrets; ``edit`` also writes
  workloads, Services, ConfigMaps and Secrets and may exec/attach/port-forward; ``admin``
  adds Roles and RoleBindings.
* ``system:node``: what a node agent needs (further restricted to its own objects).
* ``system:discovery``, ``system:basic-user``, ``system:public-info-viewer``: discovery,
  self-reviews and health for every authenticated user (health, version and the console's
  sign-in page for anonymous clients too).
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]
RBAC_V1 = "rbac.authorization.k8s.io/v1"
READ = ["get", "list", "watch"]
WRITE = ["create", "delete", "deletecollection", "patch", "update"]
WORKLOADS: list[tuple[str, list[str]]] = [
    ("", ["pods", "services", "endpoints", "configmaps", "serviceaccounts",
          "replicationcontrollers", "replicationcontrollers/scale"]),
    ("apps", ["deployments", "deployments/scale", "replicasets", "replicasets/scale"]),
    ("networking.k8s.io", ["networkpolicies"]),
    ("discovery.k8s.io", ["endpointslices"]),
    ("coordination.k8s.io", ["leases"]),
]  # fmt: skip
STATUS_AND_LOGS: list[tuple[str, list[str]]] = [
    ("", ["pods/log", "pods/status", "services/status", "namespaces", "namespaces/status",
          "events", "replicationcontrollers/status"]),
    ("apps", ["deployments/status", "replicasets/status"]),
    ("metrics.k8s.io", ["pods", "nodes"]),
]  # fmt: skip

# Health, version, and the console's sign-in page with its static assets.
PUBLIC_URLS = ["/healthz", "/livez", "/readyz", "/version", "/version/", "/console/static/*"]
DISCOVERY_URLS = ["/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*", "/version"]


def rule(verbs: list[str], group: str, resources: list[str]) -> Obj:
    return {"verbs": verbs, "apiGroups": [group], "resources": resources}


def url_rule(verbs: list[str], urls: list[str]) -> Obj:
    return {"verbs": verbs, "nonResourceURLs": urls}


def _view() -> list[Obj]:
    return [rule(READ, g, r) for g, r in WORKLOADS + STATUS_AND_LOGS]


def _edit() -> list[Obj]:
    return [
        *_view(),
        *(rule(WRITE, g, r) for g, r in WORKLOADS),
        rule(READ + WRITE, "", ["secrets"]),
        rule(["create", "get"], "", ["pods/exec", "pods/attach", "pods/portforward"]),
        rule(READ + WRITE, "", ["pods/proxy", "services/proxy"]),
    ]


def _node() -> list[Obj]:
    return [
        rule(READ, "", ["services", "endpoints", "pods", "nodes", "namespaces", "secrets",
                        "configmaps", "persistentvolumeclaims"]),
        rule(READ, "discovery.k8s.io", ["endpointslices"]),
        rule(READ, "networking.k8s.io", ["networkpolicies"]),
        rule(["create", "get", "list", "watch", "update", "patch"], "", ["nodes"]),
        rule(["update", "patch"], "", ["nodes/status", "pods/status"]),
        rule(["create", "update", "patch"], "", ["events"]),
        rule(["create", "get", "update", "patch", "delete"], "coordination.k8s.io", ["leases"]),
    ]  # fmt: skip


def cluster_role(name: str, rules: list[Obj]) -> Obj:
    return {
        "apiVersion": RBAC_V1,
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
        "rules": rules,
    }


def cluster_binding(role: str, groups: list[str]) -> Obj:
    return {
        "apiVersion": RBAC_V1,
        "kind": "ClusterRoleBinding",
        "metadata": {"name": role, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g} for g in groups
        ],
    }


def default_objects() -> list[Obj]:
    authenticated = ["system:authenticated"]
    everyone = ["system:authenticated", "system:unauthenticated"]
    reviews = ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]
    rbac = ["roles", "rolebindings"]
    return [
        cluster_role("cluster-admin", [rule(["*"], "*", ["*"]), url_rule(["*"], ["*"])]),
        cluster_role("admin", [*_edit(), rule(READ + WRITE, "rbac.authorization.k8s.io", rbac)]),
        cluster_role("edit", _edit()),
        cluster_role("view", _view()),
        cluster_role("system:node", _node()),
        cluster_role("system:discovery", [url_rule(["get"], DISCOVERY_URLS)]),
        cluster_role(
            "system:basic-user",
            [
                rule(["create"], "authorization.k8s.io", reviews),
                rule(["create"], "authentication.k8s.io", ["selfsubjectreviews"]),
            ],
        ),
        cluster_role(
            "system:public-info-viewer",
            [url_rule(["get"], PUBLIC_URLS), url_rule(["get", "post"], ["/console/login"])],
        ),
        cluster_binding("cluster-admin", ["system:masters"]),
        cluster_binding("system:node", ["system:nodes"]),
        cluster_binding("system:discovery", authenticated),
        cluster_binding("system:basic-user", authenticated),
        cluster_binding("system:public-info-viewer", everyone),
    ]
