"""Request attributes: what an HTTP request asks to do, in the terms RBAC rules name.

Follows kube-apiserver's RequestInfoFactory (k8s.io/apiserver/pkg/endpoints/request/
requestinfo.go): ``/api/v1/...`` and ``/apis/{group}/{version}/...`` are resource requests
(verb from the method: get/list/watch, create, update, patch, delete/deletecollection;
namespace, resource, name, subresource from the path); everything else is a non-resource
request whose verb is the lower-cased method.  The streaming subresources (exec, attach,
portforward) need ``create`` whatever the method, so a websocket GET cannot slip past a
read-only role.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from knemu.apiserver.auth.authn import UserInfo

_METHOD_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}
_CREATE_SUBRESOURCES = frozenset({"exec", "attach", "portforward"})
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})


@dataclass(frozen=True)
class Attributes:
    """One request, as an authorizer sees it (authorizer.AttributesRecord)."""

    user: UserInfo
    verb: str
    resource_request: bool
    path: str = ""
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""

    def describe(self) -> str:
        """kube-apiserver's forbidden message tail: ``pods "x" in the namespace "y"``."""
        if not self.resource_request:
            return f'path "{self.path}"'
        what = f'resource "{self.resource}{"/" + self.subresource if self.subresource else ""}"'
        group = f' in API group "{self.api_group}"'
        scope = (
            f' in the namespace "{self.namespace}"' if self.namespace else " at the cluster scope"
        )
        return what + group + scope


def request_attributes(
    user: UserInfo, method: str, path: str, query: Mapping[str, str]
) -> Attributes:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return Attributes(user, method.lower(), False, path)
    if not rest:  # /api/v1, /apis/apps/v1: discovery documents
        return Attributes(user, method.lower(), False, path)
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if resource == "namespaces" and name and not subresource:
        namespace = name  # a namespace object is addressed in its own namespace (as upstream)
    return Attributes(
        user,
        _verb(method, bool(name), subresource, query),
        True,
        path,
        group,
        version,
        namespace,
        resource,
        subresource,
        name,
    )


def _verb(method: str, named: bool, subresource: str, query: Mapping[str, str]) -> str:
    if subresource in _CREATE_SUBRESOURCES:
        return "create"
    if method in ("GET", "HEAD"):
        if query.get("watch") in ("true", "1"):
            return "watch"
        return "get" if named else "list"
    if method == "DELETE":
        return "delete" if named else "deletecollection"
    return _METHOD_VERBS.get(method, method.lower())
