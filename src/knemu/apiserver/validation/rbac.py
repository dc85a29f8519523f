"""Role, ClusterRole, RoleBinding, ClusterRoleBinding (rbac.authorization.k8s.io/v1):
validation as pkg/apis/rbac/validation does it.

Names are path segments (``system:node`` is legal; ``/`` and ``%`` are not).  A rule names
verbs, and either resources with apiGroups or nonResourceURLs (the latter only in a
ClusterRole); a binding refers to one role (roleRef: a ClusterRole, or a Role in its own
namespace) and names subjects of kind User, Group or ServiceAccount.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from knemu.apiserver.validation.common import Obj, as_map, check_metadata, invalid, required
from knemu.errors import FieldError

RBAC_GROUP = "rbac.authorization.k8s.io"
_SUBJECT_KINDS = ("User", "Group", "ServiceAccount")


def path_segment_name(value: str) -> list[str]:
    """ValidatePathSegmentName: any name usable as one URL path segment."""
    if value in (".", ".."):
        return [f"may not be '{value}'"]
    return [f"may not contain '{c}'" for c in "/%" if c in value]


def _strings(path: str, value: Any) -> tuple[list[str], list[FieldError]]:
    if value is None:
        return [], []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return [], [invalid(path, value, "must be a list of strings")]
    return value, []


def _rule(path: str, rule: Any, cluster: bool) -> list[FieldError]:
    if not isinstance(rule, Mapping):
        return [invalid(path, rule, "must be a PolicyRule object (verbs, apiGroups, resources)")]
    errs: list[FieldError] = []
    lists = {}
    for key in ("verbs", "apiGroups", "resources", "resourceNames", "nonResourceURLs"):
        lists[key], bad = _strings(f"{path}.{key}", rule.get(key))
        errs += bad
    if not lists["verbs"]:
        errs.append(required(f"{path}.verbs", "verbs must contain at least one value"))
    if lists["nonResourceURLs"]:
        if not cluster:
            errs.append(invalid(f"{path}.nonResourceURLs", lists["nonResourceURLs"],
                                "namespaced rules cannot apply to non-resource URLs"))  # fmt: skip
        if lists["resources"] or lists["apiGroups"]:
            errs.append(invalid(f"{path}.nonResourceURLs", lists["nonResourceURLs"],
                                "rules cannot apply to both regular resources and "
                                "non-resource URLs"))  # fmt: skip
    elif not lists["resources"]:
        errs.append(
            required(f"{path}.resources", "resource rules must supply at least one resource")
        )
    elif not rule.get("apiGroups"):
        errs.append(required(f"{path}.apiGroups", 'name the API groups ("" is the core group)'))
    return errs


def _validate_role(obj: Obj, cluster: bool) -> list[FieldError]:
    errs = check_metadata(obj, path_segment_name)
    rules = obj.get("rules")
    if rules is not None and not isinstance(rules, list):
        return [*errs, invalid("rules", rules, "must be a list of PolicyRule objects")]
    for i, rule in enumerate(rules or []):
        errs += _rule(f"rules[{i}]", rule, cluster)
    return errs


def validate_role(obj: Obj) -> list[FieldError]:
    return _validate_role(obj, cluster=False)


def validate_cluster_role(obj: Obj) -> list[FieldError]:
    return _validate_role(obj, cluster=True)


def _subject(path: str, subject: Any) -> list[FieldError]:
    if not isinstance(subject, Mapping):
        return [invalid(path, subject, "must be a Subject object (kind, name)")]
    errs: list[FieldError] = []
    if subject.get("kind") not in _SUBJECT_KINDS:
        errs.append(FieldError(f"{path}.kind", f"Unsupported value: {subject.get('kind')!r}: "
                               f"supported values: {', '.join(_SUBJECT_KINDS)}",
                               "FieldValueNotSupported"))  # fmt: skip
    if not isinstance(subject.get("name"), str) or not subject.get("name"):
        errs.append(required(f"{path}.name"))
    return errs


def _validate_binding(obj: Obj, cluster: bool) -> list[FieldError]:
    errs = check_metadata(obj, path_segment_name)
    ref = as_map(obj.get("roleRef"))
    kinds = ("ClusterRole",) if cluster else ("Role", "ClusterRole")
    if ref.get("kind") not in kinds:
        errs.append(FieldError("roleRef.kind", f"Unsupported value: {ref.get('kind')!r}: "
                               f"supported values: {', '.join(kinds)}",
                               "FieldValueNotSupported"))  # fmt: skip
    if not isinstance(ref.get("name"), str) or not ref.get("name"):
        errs.append(required("roleRef.name", "name the role this binding grants"))
    if ref.get("apiGroup", RBAC_GROUP) != RBAC_GROUP:
        errs.append(invalid("roleRef.apiGroup", ref.get("apiGroup"), f"must be {RBAC_GROUP}"))
    subjects = obj.get("subjects")
    if subjects is not None and not isinstance(subjects, list):
        return [*errs, invalid("subjects", subjects, "must be a list of Subject objects")]
    for i, subject in enumerate(subjects or []):
        errs += _subject(f"subjects[{i}]", subject)
    return errs


def validate_role_binding(obj: Obj) -> list[FieldError]:
    return _validate_binding(obj, cluster=False)


def validate_cluster_role_binding(obj: Obj) -> list[FieldError]:
    return _validate_binding(obj, cluster=True)


def validate_role_ref_unchanged(old: Obj, new: Obj) -> list[FieldError]:
    """roleRef is immutable: delete and re-create the binding to change it (as upstream)."""
    if as_map(old.get("roleRef")) != as_map(new.get("roleRef")):
        return [invalid("roleRef", new.get("roleRef"), "cannot change roleRef")]
    return []


API_VERSIONS = {k: f"{RBAC_GROUP}/v1" for k in
                ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")}  # fmt: skip
SHORT_NAMES: dict[str, str] = {}
VALIDATORS = {
    "Role": validate_role,
    "ClusterRole": validate_cluster_role,
    "RoleBinding": validate_role_binding,
    "ClusterRoleBinding": validate_cluster_role_binding,
}
UPDATE_VALIDATORS = {
    "RoleBinding": validate_role_ref_unchanged,
    "ClusterRoleBinding": validate_role_ref_unchanged,
}
