"""OpenAPI schemas of rbac.authorization.k8s.io/v1 (Role, ClusterRole, RoleBinding,
ClusterRoleBinding) and SubjectAccessReview."""

from __future__ import annotations

from knemu.apiserver.rest.openapi.schemas import (
    Schema,
    array,
    free,
    list_of,
    obj,
    string,
    strings,
    top,
)

RBAC = "io.k8s.api.rbac.v1."
AUTHORIZATION = "io.k8s.api.authorization.v1."
GROUP = "rbac.authorization.k8s.io"

_RULE = obj(
    "PolicyRule: verbs on resources of API groups, or on non-resource URLs.",
    {
        "verbs": strings("Verbs allowed (get, list, watch, create, update, patch, delete, *)."),
        "apiGroups": strings('API groups of the resources ("" is the core group, * any).'),
        "resources": strings("Resources (pods, pods/log, */scale, *)."),
        "resourceNames": strings("Names the rule is limited to (empty: all)."),
        "nonResourceURLs": strings("Non-resource paths (/healthz, /api/*); ClusterRoles only."),
    },
    required=("verbs",),
)
_SUBJECT = obj(
    "Subject: a User, Group or ServiceAccount (with its namespace).",
    {"kind": string("User, Group or ServiceAccount."), "name": string("Its name."),
     "namespace": string("A ServiceAccount's namespace."), "apiGroup": string("API group.")},
    required=("kind", "name"),
)  # fmt: skip
_ROLE_REF = obj(
    "The role a binding grants: a ClusterRole, or a Role in the binding's namespace.",
    {
        "apiGroup": string(GROUP),
        "kind": string("Role or ClusterRole."),
        "name": string("Its name."),
    },
    required=("kind", "name"),
)


def _role(kind: str, desc: str) -> Schema:
    return top(desc, GROUP, "v1", kind, {"rules": array(_RULE, "The rules of this role.")})


def _binding(kind: str, desc: str) -> Schema:
    return top(
        desc,
        GROUP,
        "v1",
        kind,
        {
            "roleRef": _ROLE_REF,
            "subjects": array(_SUBJECT, "Who the role is granted to."),
        },
    )


RBAC_TYPES: dict[str, Schema] = {
    RBAC + "Role": _role("Role", "A namespaced set of permissions."),
    RBAC + "ClusterRole": _role("ClusterRole", "A cluster-wide set of permissions."),
    RBAC + "RoleBinding": _binding("RoleBinding", "Grants a role within its namespace."),
    RBAC + "ClusterRoleBinding": _binding("ClusterRoleBinding", "Grants a ClusterRole everywhere."),
    AUTHORIZATION + "SubjectAccessReview": top(
        "Checks whether a given user or group can perform an action.",
        "authorization.k8s.io",
        "v1",
        "SubjectAccessReview",
        {
            "spec": obj(
                "user/groups and exactly one of the two attributes.",
                {
                    "user": string("The user to check."),
                    "groups": strings("Its groups."),
                    "resourceAttributes": free("namespace, verb, group, resource, name."),
                    "nonResourceAttributes": free("path and verb."),
                },
            ),
            "status": free("allowed, and the reason: filled in by the server."),
        },
    ),
}
RBAC_TYPES.update(
    {
        RBAC + kind + "List": list_of(RBAC + kind, GROUP, "v1", kind + "List")
        for kind in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")
    }
)
