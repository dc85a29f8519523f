"""Self-subject reviews: ``kubectl auth can-i`` (SelfSubjectAccessReview, with ``--list``
SelfSubjectRulesReview) and ``kubectl auth whoami`` (SelfSubjectReview).

knemu does not authenticate or authorize requests yet (DESIGN.md plans client certificates
and the Node authorizer), so every review allows everything, and says so in its reason; the
user is ``knemu-admin`` in ``system:masters``, what a kind cluster's admin kubeconfig is.
The shapes and the validation of the request follow pkg/apis/authorization/validation and
the SubjectAccessReview API (https://kubernetes.io/docs/reference/access-authn-authz/
authorization/#checking-api-access).  Pure: request body in, answer out.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from knemu.errors import FieldError, Invalid

Obj = dict[str, Any]
USER = {"username": "knemu-admin", "groups": ["system:masters", "system:authenticated"]}
REASON = (
    "knemu allows every request: its api-server does not authorize yet "
    "(user knemu-admin, group system:masters)"
)


def _check_kind(body: Obj, kind: str, api_version: str) -> Obj:
    sent = body.get("kind", kind)
    if sent != kind:
        raise Invalid(kind, "", [FieldError("kind", f"Unsupported value: {sent!r}: send a {kind}",
                                            "FieldValueNotSupported")])  # fmt: skip
    out = copy.deepcopy(body)
    out.update(kind=kind, apiVersion=api_version)
    out.setdefault("metadata", {})
    return out


def access_review(body: Obj) -> Obj:
    out = _check_kind(body, "SelfSubjectAccessReview", "authorization.k8s.io/v1")
    spec = out.get("spec")
    if not isinstance(spec, dict):
        spec = {}
    has_resource, has_other = "resourceAttributes" in spec, "nonResourceAttributes" in spec
    if has_resource == has_other:
        detail = "exactly one of nonResourceAttributes or resourceAttributes must be specified"
        raise Invalid("SelfSubjectAccessReview", "",
                      [FieldError("spec", f"Invalid value: {spec!r}: {detail}")])  # fmt: skip
    out["status"] = {"allowed": True, "reason": REASON}
    return out


def rules_review(body: Obj) -> Obj:
    out = _check_kind(body, "SelfSubjectRulesReview", "authorization.k8s.io/v1")
    out["status"] = {
        "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
        "incomplete": False,
    }
    return out


def self_review(body: Obj) -> Obj:
    out = _check_kind(body, "SelfSubjectReview", "authentication.k8s.io/v1")
    out["status"] = {"userInfo": copy.deepcopy(USER)}
    return out


# path under /apis -> answer
REVIEWS: dict[str, Callable[[Obj], Obj]] = {
    "authorization.k8s.io/v1/selfsubjectaccessreviews": access_review,
    "authorization.k8s.io/v1/selfsubjectrulesreviews": rules_review,
    "authentication.k8s.io/v1/selfsubjectreviews": self_review,
}
