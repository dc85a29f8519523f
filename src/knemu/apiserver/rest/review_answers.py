"""Access reviews: ``kubectl auth can-i`` (SelfSubjectAccessReview, with ``--list``
SelfSubjectRulesReview), ``kubectl auth whoami`` (SelfSubjectReview) and SubjectAccessReview
(may user X do Y, asked by someone allowed to create one).

Each answer comes from the same RBAC policy that authorizes requests, for the asking user
(or, in a SubjectAccessReview, the user and groups it names).  The shapes and the validation
of the request follow pkg/apis/authorization/validation and the SubjectAccessReview API
(https://kubernetes.io/docs/reference/access-authn-authz/authorization/#checking-api-access).
Pure: request body, user and policy in, answer out.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from knemu.apiserver.auth.attributes import Attributes
from knemu.apiserver.auth.authn import UserInfo
from knemu.apiserver.auth.rbac import Policy
from knemu.errors import FieldError, Invalid

Obj = dict[str, Any]
Answer = Callable[[Obj, UserInfo, Policy], Obj]


def _check_kind(body: Obj, kind: str, api_version: str) -> Obj:
    sent = body.get("kind", kind)
    if sent != kind:
        raise Invalid(kind, "", [FieldError("kind", f"Unsupported value: {sent!r}: send a {kind}",
                                            "FieldValueNotSupported")])  # fmt: skip
    out = copy.deepcopy(body)
    out.update(kind=kind, apiVersion=api_version)
    out.setdefault("metadata", {})
    return out


def _text(spec: Mapping[str, Any], key: str) -> str:
    value = spec.get(key)
    return value if isinstance(value, str) else ""


def _attributes(kind: str, spec: Obj, user: UserInfo) -> Attributes:
    has_resource, has_other = "resourceAttributes" in spec, "nonResourceAttributes" in spec
    if has_resource == has_other:
        detail = "exactly one of nonResourceAttributes or resourceAttributes must be specified"
        raise Invalid(kind, "", [FieldError("spec", f"Invalid value: {spec!r}: {detail}")])
    if has_other:
        other = spec["nonResourceAttributes"]
        other = other if isinstance(other, Mapping) else {}
        return Attributes(user, _text(other, "verb"), False, _text(other, "path"))
    res = spec["resourceAttributes"]
    res = res if isinstance(res, Mapping) else {}
    return Attributes(
        user,
        _text(res, "verb"),
        True,
        "",
        _text(res, "group"),
        _text(res, "version"),
        _text(res, "namespace"),
        _text(res, "resource"),
        _text(res, "subresource"),
        _text(res, "name"),
    )


def _decide(attrs: Attributes, policy: Policy) -> Obj:
    allowed, reason = policy.authorize(attrs)
    status: Obj = {"allowed": allowed}
    if reason:
        status["reason"] = reason
    return status


def access_review(body: Obj, user: UserInfo, policy: Policy) -> Obj:
    out = _check_kind(body, "SelfSubjectAccessReview", "authorization.k8s.io/v1")
    spec = out.get("spec")
    spec = spec if isinstance(spec, dict) else {}
    out["status"] = _decide(_attributes("SelfSubjectAccessReview", spec, user), policy)
    return out


def subject_access_review(body: Obj, user: UserInfo, policy: Policy) -> Obj:
    """May the user the review names do it? (``user`` is the one asking, already allowed
    to create SubjectAccessReviews.)"""
    out = _check_kind(body, "SubjectAccessReview", "authorization.k8s.io/v1")
    spec = out.get("spec")
    spec = spec if isinstance(spec, dict) else {}
    name = _text(spec, "user")
    groups = spec.get("groups")
    group_list = tuple(str(g) for g in groups) if isinstance(groups, list) else ()
    if not name and not group_list:
        raise Invalid("SubjectAccessReview", "",
                      [FieldError("spec.user", "Required value: at least one of user or group "
                                  "must be specified", "FieldValueRequired")])  # fmt: skip
    subject = UserInfo(name, group_list, _text(spec, "uid"))
    out["status"] = _decide(_attributes("SubjectAccessReview", spec, subject), policy)
    return out


def rules_review(body: Obj, user: UserInfo, policy: Policy) -> Obj:
    out = _check_kind(body, "SelfSubjectRulesReview", "authorization.k8s.io/v1")
    spec = out.get("spec")
    namespace = _text(spec, "namespace") if isinstance(spec, Mapping) else ""
    resource, other = policy.rules_for(user, namespace)
    out["status"] = {"resourceRules": resource, "nonResourceRules": other, "incomplete": False}
    return out


def self_review(body: Obj, user: UserInfo, policy: Policy) -> Obj:
    out = _check_kind(body, "SelfSubjectReview", "authentication.k8s.io/v1")
    out["status"] = {"userInfo": user.as_dict()}
    return out


# path under /apis -> answer
REVIEWS: dict[str, Answer] = {
    "authorization.k8s.io/v1/selfsubjectaccessreviews": access_review,
    "authorization.k8s.io/v1/subjectaccessreviews": subject_access_review,
    "authorization.k8s.io/v1/selfsubjectrulesreviews": rules_review,
    "authentication.k8s.io/v1/selfsubjectreviews": self_review,
}
