"""The resource table served over REST and its discovery documents.

One row per resource type: which URL group/version/plural maps to which stored kind, whether
it is namespaced, and which subresources it has.  The discovery documents (/api, /api/v1,
/apis, /apis/{group}/{version}) are generated from the same table, shaped as the Kubernetes
API discovery endpoints return them (https://kubernetes.io/docs/concepts/overview/
kubernetes-api/#discovery-api), so kubectl-style clients and the official Python client can
find every resource.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Verbs as Kubernetes lists them in an APIResource.
_ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
_SUB_VERBS = ("get", "patch", "update")

# The version this server claims in /version; the REST surface follows the v1.30 API.
VERSION_INFO = {
    "major": "1",
    "minor": "30",
    "gitVersion": "v1.30.0-knemu",
    "gitCommit": "",
    "gitTreeState": "clean",
    "buildDate": "1970-01-01T00:00:00Z",
    "goVersion": "python",
    "compiler": "cpython",
    "platform": "linux/amd64",
}


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()  # "status", "scale"
    categories: tuple[str, ...] = ()  # "all": listed by `kubectl get all`, as upstream
    verbs: tuple[str, ...] = _ALL_VERBS  # ("create",): a review answered, never stored

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def describe(self) -> list[dict[str, Any]]:
        """APIResource entries for this resource and its subresources."""
        entries: list[dict[str, Any]] = [
            {
                "name": self.plural,
                "singularName": self.singular,
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": list(self.verbs),
                "shortNames": list(self.short_names),
            }
        ]
        if self.categories:
            entries[0]["categories"] = list(self.categories)
        for sub in self.subresources:
            entry: dict[str, Any] = {
                "name": f"{self.plural}/{sub}",
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": "Scale" if sub == "scale" else self.kind,
                "verbs": list(_SUB_VERBS),
            }
            if sub == "scale":
                entry.update(group="autoscaling", version="v1")
            entries.append(entry)
        return entries


_ALL = ("all",)
_RBAC = "rbac.authorization.k8s.io"
RESOURCES: tuple[Resource, ...] = (
    Resource("", "v1", "namespaces", "Namespace", False, ("ns",), ("status",)),
    Resource("", "v1", "nodes", "Node", False, ("no",), ("status",)),
    Resource("", "v1", "pods", "Pod", True, ("po",), ("status",), _ALL),
    Resource("", "v1", "services", "Service", True, ("svc",), ("status",), _ALL),
    Resource("", "v1", "endpoints", "Endpoints", True, ("ep",)),
    Resource("", "v1", "events", "Event", True, ("ev",)),
    Resource("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
    Resource("", "v1", "secrets", "Secret", True),
    Resource("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",)),
    Resource(
        "",
        "v1",
        "replicationcontrollers",
        "ReplicationController",
        True,
        ("rc",),
        ("status",),
        _ALL,
    ),
    Resource("coordination.k8s.io", "v1", "leases", "Lease", True),
    Resource("metrics.k8s.io", "v1beta1", "nodes", "NodeMetrics", False, verbs=("get", "list")),
    Resource("metrics.k8s.io", "v1beta1", "pods", "PodMetrics", True, verbs=("get", "list")),
    Resource(
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        False,
        verbs=("create",),
    ),
    Resource(
        "authorization.k8s.io",
        "v1",
        "selfsubjectrulesreviews",
        "SelfSubjectRulesReview",
        False,
        verbs=("create",),
    ),
    Resource(
        "authentication.k8s.io",
        "v1",
        "selfsubjectreviews",
        "SelfSubjectReview",
        False,
        verbs=("create",),
    ),
    Resource(
        "apps", "v1", "deployments", "Deployment", True, ("deploy",), ("status", "scale"), _ALL
    ),
    Resource("apps", "v1", "replicasets", "ReplicaSet", True, ("rs",), ("status", "scale"), _ALL),
    Resource("apps", "v1", "daemonsets", "DaemonSet", True, ("ds",), ("status",), _ALL),
    Resource("apps", "v1", "controllerrevisions", "ControllerRevision", True),
    Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True),
    Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, ("netpol",)),
    Resource("networking.k8s.io", "v1", "ingresses", "Ingress", True, ("ing",), ("status",), _ALL),
    Resource("networking.k8s.io", "v1", "ingressclasses", "IngressClass", False),
    Resource(_RBAC, "v1", "clusterroles", "ClusterRole", False),
    Resource(_RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    Resource(_RBAC, "v1", "roles", "Role", True),
    Resource(_RBAC, "v1", "rolebindings", "RoleBinding", True),
    Resource(
        "authorization.k8s.io",
        "v1",
        "subjectaccessreviews",
        "SubjectAccessReview",
        False,
        verbs=("create",),
    ),
)

_BY_PATH = {(r.group_version, r.plural): r for r in RESOURCES}
_BY_KIND = {r.kind: r for r in RESOURCES}


def find(group_version: str, plural: str) -> Resource | None:
    return _BY_PATH.get((group_version, plural))


def by_kind(kind: str) -> Resource | None:
    return _BY_KIND.get(kind)


def api_version(kind: str) -> str:
    """apiVersion of a stored kind (``v1``, ``apps/v1``, ...); ``v1`` if unknown."""
    res = _BY_KIND.get(kind)
    return res.group_version if res else "v1"


def group_versions() -> list[str]:
    """Every non-core group/version served, in table order."""
    seen: list[str] = []
    for res in RESOURCES:
        if res.group and res.group_version not in seen:
            seen.append(res.group_version)
    return seen


def core_versions(server_address: str) -> dict[str, Any]:
    """GET /api: APIVersions."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def group_list() -> dict[str, Any]:
    """GET /apis: APIGroupList."""
    groups = []
    for gv in group_versions():
        group, version = gv.split("/")
        entry = {"groupVersion": gv, "version": version}
        groups.append({"name": group, "versions": [entry], "preferredVersion": entry})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def group_document(group: str) -> dict[str, Any] | None:
    """GET /apis/{group}: APIGroup."""
    for gv in group_versions():
        name, version = gv.split("/")
        if name == group:
            entry = {"groupVersion": gv, "version": version}
            return {
                "kind": "APIGroup",
                "apiVersion": "v1",
                "name": name,
                "versions": [entry],
                "preferredVersion": entry,
            }
    return None


def resource_list(group_version: str) -> dict[str, Any] | None:
    """GET /api/v1 or /apis/{group}/{version}: APIResourceList (None if not served)."""
    resources = [e for r in RESOURCES if r.group_version == group_version for e in r.describe()]
    if not resources:
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }
