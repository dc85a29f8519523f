"""Errors of the REST layer and the Kubernetes Status objects every error answer carries.

https://kubernetes.io/docs/reference/using-api/api-concepts/#response-status-kind
"""

from __future__ import annotations

from typing import Any

from knemu.errors import Invalid, KnemuError, LocalError

Obj = dict[str, Any]


class BadRequest(LocalError):
    """A malformed request: body, selector or patch (HTTP 400)."""


class UnsupportedMediaType(LocalError):
    http_status = 415
    reason = "UnsupportedMediaType"


class MethodNotAllowed(LocalError):
    http_status = 405
    reason = "MethodNotAllowed"


def status_failure(err: KnemuError, kind: str = "", name: str = "") -> Obj:
    """A Kubernetes Status object for an error (metav1.Status)."""
    details: Obj = {}
    if name:
        details["name"] = name
    if kind:
        details["kind"] = kind
    if isinstance(err, Invalid):
        details["kind"] = kind or err.kind
        details["name"] = name or err.name
    causes = getattr(err, "causes", None)  # Invalid's field errors, apply's conflicts
    if causes:
        details["causes"] = [
            {"reason": c.type, "message": c.message, "field": c.field} for c in causes
        ]
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": err.message,
        "reason": err.reason,
        "code": err.http_status,
    }
    if details:
        body["details"] = details
    return body


def status_success(kind: str, name: str, uid: str = "") -> Obj:
    details: Obj = {"name": name, "kind": kind}
    if uid:
        details["uid"] = uid
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    }
