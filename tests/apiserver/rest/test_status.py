"""Status objects of error answers (knemu.apiserver.rest.status)."""

from __future__ import annotations

from knemu.apiserver.rest.status import status_failure
from knemu.errors import FieldError, Invalid


def test_status_shape_for_invalid() -> None:
    err = Invalid("Service", "web", [FieldError("spec.ports[0].port", "must be 1-65535")])
    body = status_failure(err)
    assert body["code"] == 422 and body["reason"] == "Invalid"
    assert body["details"] == {
        "kind": "Service",
        "name": "web",
        "causes": [
            {
                "reason": "FieldValueInvalid",
                "message": "must be 1-65535",
                "field": "spec.ports[0].port",
            }
        ],
    }
