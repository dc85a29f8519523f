"""The RBAC authorizer: Role/ClusterRole rules granted through RoleBinding/ClusterRoleBinding
subjects, evaluated as kube-apiserver's rbac authorizer does
(https://kubernetes.io/docs/reference/access-authn-authz/rbac/).

A request is allowed when some binding that applies names the user (kind User), one of its
groups (kind Group) or, for ``system:serviceaccount:NS:NAME``, that ServiceAccount, and the
role it refers to has a rule covering the request.  ClusterRoleBindings apply everywhere;
a RoleBinding applies in its own namespace, to a Role there or a ClusterRole.  Rules match
verbs, apiGroups, resources (``pods``, ``pods/log``, ``*``, ``*/scale``), resourceNames, or
nonResourceURLs (exact, or a prefix ending in ``*``).  Members of ``system:masters`` are
allowed everything without a lookup, as kube-apiserver's privileged-group authorizer.

``Policy`` is an immutable snapshot of the four kinds; the REST adapter rebuilds it when one
of them changes.  Pure: objects in, decisions out.

Privilege escalation is prevented as upstream does it
(https://kubernetes.io/docs/reference/access-authn-authz/rbac/#privilege-escalation-prevention-and-bootstrapping):
a user may write a Role/ClusterRole only with rules it already holds where the role applies
(or the ``escalate`` verb on roles), and a binding only to a role whose rules it holds (or the
``bind`` verb on that role).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from knemu.apiserver.auth.attributes import Attributes
from knemu.apiserver.auth.authn import UserInfo
from knemu.pki import MASTERS_GROUP

Obj = dict[str, Any]
KINDS = ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")
SA_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True)
class Rule:
    verbs: frozenset[str]
    api_groups: frozenset[str]
    resources: frozenset[str]
    resource_names: frozenset[str]
    urls: tuple[str, ...]

    @classmethod
    def from_obj(cls, rule: Any) -> Rule | None:
        if not isinstance(rule, Mapping):
            return None

        def strs(key: str) -> list[str]:
            value = rule.get(key) or []
            return [str(v) for v in value] if isinstance(value, list) else []

        return cls(
            frozenset(strs("verbs")),
            frozenset(strs("apiGroups")),
            frozenset(strs("resources")),
            frozenset(strs("resourceNames")),
            tuple(strs("nonResourceURLs")),
        )

    def covers(self, attrs: Attributes) -> bool:
        if not ("*" in self.verbs or attrs.verb in self.verbs):
            return False
        if not attrs.resource_request:
            return any(_url_matches(u, attrs.path) for u in self.urls)
        if not ("*" in self.api_groups or attrs.api_group in self.api_groups):
            return False
        if not self._resource_matches(attrs.resource, attrs.subresource):
            return False
        return not self.resource_names or attrs.name in self.resource_names

    def _resource_matches(self, resource: str, sub: str) -> bool:
        if "*" in self.resources:
            return True
        if not sub:
            return resource in self.resources
        return f"{resource}/{sub}" in self.resources or f"*/{sub}" in self.resources

    def as_resource_rule(self) -> Obj:
        out: Obj = {
            "verbs": sorted(self.verbs),
            "apiGroups": sorted(self.api_groups),
            "resources": sorted(self.resources),
        }
        if self.resource_names:
            out["resourceNames"] = sorted(self.resource_names)
        return out


def _url_matches(pattern: str, path: str) -> bool:
    if pattern.endswith("*"):
        return path.startswith(pattern[:-1])
    return path == pattern


@dataclass(frozen=True)
class _Binding:
    namespace: str  # "" for a ClusterRoleBinding
    role: tuple[str, str]  # (kind, name)
    users: frozenset[str]
    groups: frozenset[str]

    def names(self, user: UserInfo) -> bool:
        return user.name in self.users or any(g in self.groups for g in user.groups)


def _subjects(binding: Obj, namespace: str) -> tuple[frozenset[str], frozenset[str]]:
    users, groups = set(), set()
    for subject in binding.get("subjects") or []:
        if not isinstance(subject, Mapping):
            continue
        kind, name = subject.get("kind"), str(subject.get("name") or "")
        if kind == "User":
            users.add(name)
        elif kind == "Group":
            groups.add(name)
        elif kind == "ServiceAccount":
            ns = str(subject.get("namespace") or namespace)
            users.add(f"{SA_PREFIX}{ns}:{name}")
    return frozenset(users), frozenset(groups)


def _binding(obj: Obj, namespaced: bool) -> _Binding | None:
    ref = obj.get("roleRef")
    if not isinstance(ref, Mapping):
        return None
    namespace = str(obj.get("metadata", {}).get("namespace") or "") if namespaced else ""
    users, groups = _subjects(obj, namespace)
    return _Binding(namespace, (str(ref.get("kind")), str(ref.get("name"))), users, groups)


class Policy:
    """A snapshot of every Role, ClusterRole and binding, ready to answer requests."""

    def __init__(self, objects: Mapping[str, Iterable[Obj]]) -> None:
        self._roles: dict[tuple[str, str, str], tuple[Rule, ...]] = {}
        for kind in ("Role", "ClusterRole"):
            for obj in objects.get(kind, ()):
                meta = obj.get("metadata", {})
                ns = str(meta.get("namespace") or "") if kind == "Role" else ""
                rules = tuple(r for r in map(Rule.from_obj, obj.get("rules") or []) if r)
                self._roles[(kind, ns, str(meta.get("name")))] = rules
        self._bindings: list[_Binding] = []
        for kind, namespaced in (("ClusterRoleBinding", False), ("RoleBinding", True)):
            for obj in objects.get(kind, ()):
                binding = _binding(obj, namespaced)
                if binding is not None:
                    self._bindings.append(binding)

    def _rules(self, binding: _Binding) -> tuple[Rule, ...]:
        kind, name = binding.role
        if kind == "ClusterRole":
            return self._roles.get(("ClusterRole", "", name), ())
        if kind == "Role" and binding.namespace:
            return self._roles.get(("Role", binding.namespace, name), ())
        return ()

    def _applying(self, user: UserInfo, namespace: str) -> Iterable[tuple[_Binding, Rule]]:
        for binding in self._bindings:
            if binding.namespace and binding.namespace != namespace:
                continue
            if binding.names(user):
                for rule in self._rules(binding):
                    yield binding, rule

    def authorize(self, attrs: Attributes) -> tuple[bool, str]:
        """(allowed, reason) for one request."""
        if MASTERS_GROUP in attrs.user.groups:
            return True, f"user is in the {MASTERS_GROUP} group"
        for binding, rule in self._applying(attrs.user, attrs.namespace):
            if rule.covers(attrs):
                where = f"RoleBinding in {binding.namespace}" if binding.namespace else (
                    "ClusterRoleBinding")  # fmt: skip
                return True, f'RBAC: allowed by {where} to {binding.role[0]} "{binding.role[1]}"'
        return False, ""

    def role_rules(self, kind: str, namespace: str, name: str) -> tuple[Rule, ...]:
        return self._roles.get((kind, namespace, name), ())

    def held_rules(self, user: UserInfo, namespace: str) -> list[Rule]:
        """Every rule granted to ``user`` where ``namespace`` ("" : cluster scope) applies."""
        return [rule for _, rule in self._applying(user, namespace)]

    def rules_for(self, user: UserInfo, namespace: str) -> tuple[list[Obj], list[Obj]]:
        """(resourceRules, nonResourceRules) the user has in ``namespace``
        (SelfSubjectRulesReview)."""
        if MASTERS_GROUP in user.groups:
            everything = Rule(frozenset("*"), frozenset("*"), frozenset("*"), frozenset(), ("*",))
            return [everything.as_resource_rule()], [{"verbs": ["*"], "nonResourceURLs": ["*"]}]
        resource, other = [], []
        for _, rule in self._applying(user, namespace):
            if rule.resources:
                resource.append(rule.as_resource_rule())
            if rule.urls:
                other.append({"verbs": sorted(rule.verbs), "nonResourceURLs": list(rule.urls)})
        return resource, other


def _atoms(rule: Rule) -> list[tuple[str, str, str, str, str]]:
    """(verb, group, resource, name, url) tuples a rule grants, wildcards kept literal."""
    names = sorted(rule.resource_names) or [""]
    out = [(v, g, r, n, "") for v in sorted(rule.verbs) for g in sorted(rule.api_groups)
           for r in sorted(rule.resources) for n in names]  # fmt: skip
    return out + [(v, "", "", "", u) for v in sorted(rule.verbs) for u in rule.urls]


def _covers(owner: Rule, atom: tuple[str, str, str, str, str]) -> bool:
    verb, group, resource, name, url = atom
    if not ("*" in owner.verbs or verb in owner.verbs):
        return False
    if url:
        return any(u == url or (u.endswith("*") and url.startswith(u[:-1])) for u in owner.urls)
    if not ("*" in owner.api_groups or group in owner.api_groups):
        return False
    sub = resource.partition("/")[2]
    if not ("*" in owner.resources or resource in owner.resources
            or (sub and f"*/{sub}" in owner.resources)):  # fmt: skip
        return False
    return not owner.resource_names or (bool(name) and name in owner.resource_names)


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def escalation(policy: Policy, user: UserInfo, obj: Obj) -> str:
    """Why writing ``obj`` (a role or binding) would escalate ``user``'s privileges; "" if it
    would not."""
    kind = obj.get("kind")
    meta = _map(obj.get("metadata"))
    namespace = str(meta.get("namespace") or "") if kind in ("Role", "RoleBinding") else ""
    if kind in ("Role", "ClusterRole"):
        escape = ("escalate", kind.lower() + "s", str(meta.get("name") or ""))
        granted = [r for r in map(Rule.from_obj, obj.get("rules") or []) if r]
        what = f"{kind} {meta.get('name')!r}"
    elif kind in ("RoleBinding", "ClusterRoleBinding"):
        ref = _map(obj.get("roleRef"))
        ref_kind, ref_name = str(ref.get("kind")), str(ref.get("name"))
        escape = ("bind", ref_kind.lower() + "s", ref_name)
        role_ns = namespace if ref_kind == "Role" else ""
        granted = list(policy.role_rules(ref_kind, role_ns, ref_name))
        what = f"{kind} {meta.get('name')!r} to {ref_kind} {ref_name!r}"
    else:
        return ""
    verb, resource, name = escape
    bypass = Attributes(user, verb, True, "", "rbac.authorization.k8s.io", "v1", namespace,
                        resource, "", name)  # fmt: skip
    if policy.authorize(bypass)[0]:
        return ""
    held = policy.held_rules(user, namespace)
    missing = [a for r in granted for a in _atoms(r) if not any(_covers(h, a) for h in held)]
    if not missing:
        return ""
    verb_, group, res, _, url = missing[0]
    first = url or f"{verb_} {res or '?'} in API group {group!r}"
    return (
        f"{_who(user)} may not write {what}: it grants permissions the user does not hold "
        f"(e.g. {first}; {len(missing)} in all); RBAC prevents privilege escalation: ask an "
        f"admin, or get the {verb!r} verb on {resource}"
    )


def forbidden_message(attrs: Attributes) -> str:
    """kube-apiserver's wording: ``User "x" cannot list resource "pods" in API group "" ...``."""
    return (
        f"{_who(attrs.user)} cannot {attrs.verb} {attrs.describe()}: no Role or ClusterRole "
        f'bound to user "{attrs.user.name}" or its groups grants it'
    )


def _who(user: UserInfo) -> str:
    return f'User "{user.name}"'
