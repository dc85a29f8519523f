"""PATCH bodies: RFC 7386 merge patch (also server-side apply), RFC 6902 JSON Patch (the
``jsonpatch`` library) and strategic merge patch (``strategic``), with Kubernetes' answers:
400 for a malformed patch, 422 for a failed ``test``, 415 for an unknown content type.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import jsonpointer

from knemu.apiserver.rest.bodies import decode_body
from knemu.apiserver.rest.limits import (
    PatchGrowth,
    check_encoded_size,
    check_json_patch_ops,
    check_value,
)
from knemu.apiserver.rest.status import BadRequest, Obj, UnsupportedMediaType
from knemu.apiserver.rest.strategic import strategic_merge_patch
from knemu.errors import FieldError, Invalid

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
_JSON_PATCH_OPS = ("add", "remove", "replace", "move", "copy", "test")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON Merge Patch: objects merge recursively, null deletes, anything else replaces.

    Server-side apply patches are applied with these rules; strategic merge patches have their
    own module (``knemu.apiserver.rest.strategic``).
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902 JSON Patch (add, remove, replace, move, copy, test) on a copy of ``target``.

    Operations are applied one at a time so that an error names the operation that failed;
    what each adds is counted first (``limits.PatchGrowth``), so none can blow up memory.
    """
    if not isinstance(ops, list):
        raise BadRequest("a JSON patch (RFC 6902) must be a list of operations")
    check_json_patch_ops(ops)
    doc = copy.deepcopy(target)
    growth = PatchGrowth(check_value(doc, "the patched object"))
    for index, op in enumerate(ops):
        if not isinstance(op, dict) or "path" not in op:
            raise BadRequest(f"JSON patch operation {op!r} needs 'op' and 'path'")
        if op.get("op") not in _JSON_PATCH_OPS:
            raise BadRequest(
                f"JSON patch op {op.get('op')!r} is not one of {', '.join(_JSON_PATCH_OPS)}"
            )
        growth.add(_added_value(doc, op, index), index)
        doc = _apply_op(doc, op, index)
    return doc


def _added_value(doc: Any, op: Obj, index: int) -> Any:
    """What ``op`` adds to ``doc``: its value (add, replace, test adds nothing), or for copy
    the subtree at ``from`` (the one operation that can double a document)."""
    if op["op"] in ("add", "replace"):
        return op.get("value")
    if op["op"] == "copy":
        try:
            return jsonpointer.resolve_pointer(doc, str(op.get("from", "")))
        except jsonpointer.JsonPointerException as exc:
            raise BadRequest(f"JSON patch operation {index} (copy): bad 'from': {exc}") from None
    return None


def _apply_op(doc: Any, op: Obj, index: int) -> Any:
    path = str(op["path"])
    what = f"JSON patch operation {index} ({op['op']} {path!r})"
    try:
        return jsonpatch.JsonPatch([op]).apply(doc, in_place=True)
    except jsonpatch.JsonPatchTestFailed:
        cause = FieldError(path, f"JSON patch test failed: value is not {op.get('value')!r}")
        raise Invalid("JSON patch", path, [cause]) from None
    except jsonpatch.JsonPatchPathNotFound as exc:
        raise BadRequest(f"{what}: the path does not exist ({exc})") from None
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise BadRequest(f"{what} cannot be applied: {exc}") from None


def apply_patch(target: Obj, raw: bytes, content_type: str) -> Obj:
    """Apply a PATCH body of any supported type to a copy of ``target``."""
    base = content_type.split(";")[0].strip()
    if base == JSON_PATCH:
        result = json_patch(target, decode_body(raw, base, "JSON patch"))
    elif base == STRATEGIC_PATCH:
        result = strategic_merge_patch(target, decode_body(raw, base, "strategic merge patch"))
    elif base in (MERGE_PATCH, APPLY_PATCH):
        result = merge_patch(target, decode_body(raw, base, "patch"))
    else:
        raise UnsupportedMediaType(
            f"PATCH content type {content_type!r} is not supported: use {MERGE_PATCH}, "
            f"{STRATEGIC_PATCH}, {JSON_PATCH} or {APPLY_PATCH}"
        )
    if not isinstance(result, dict):
        raise BadRequest("the patch did not leave a JSON object behind")
    check_value(result, "the patched object")
    check_encoded_size(len(json.dumps(result)), "the patched object")
    return result
