"""Pure helpers for the REST layer: bodies, patches, field selectors, Status and List shapes.

Nothing here does I/O; the aiohttp handlers in ``rest.py`` call these.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

from knemu import yamlload
from knemu.apiserver.strategic import strategic_merge_patch
from knemu.errors import Conflict, FieldError, Invalid, KnemuError, LocalError

Obj = dict[str, Any]

_TRAILING_SPACE = re.compile(r"[ \t]+$", re.MULTILINE)

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


class BadRequest(LocalError):
    """A malformed request: body, selector or patch (HTTP 400)."""


class UnsupportedMediaType(LocalError):
    http_status = 415
    reason = "UnsupportedMediaType"


class MethodNotAllowed(LocalError):
    http_status = 405
    reason = "MethodNotAllowed"


# ---- bodies ---------------------------------------------------------------------------------


def decode_body(raw: bytes, content_type: str, what: str = "request body") -> Any:
    """JSON (or YAML when the content type says so) -> Python value; BadRequest otherwise."""
    if not raw.strip():
        raise BadRequest(f"{what} is empty: send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"{what} is not UTF-8 ({exc}); send JSON text") from None
    if "yaml" in content_type:
        return _load_yaml(text, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None


def _load_yaml(text: str, what: str) -> Any:
    """YAML as Kubernetes' reader (go-yaml) takes it: trailing TABs after values, which
    PyYAML rejects and seed 002's manifests contain, are tolerated by one retry without
    trailing whitespace (block scalars lose theirs: no knemu kind carries such text)."""
    try:
        return yamlload.safe_load(text)
    except yaml.YAMLError as exc:
        if "\\t" in str(exc):
            try:
                return yamlload.safe_load(_TRAILING_SPACE.sub("", text))
            except yaml.YAMLError:
                pass
        raise BadRequest(f"{what} is not valid YAML: {exc}") from None


def decode_object(raw: bytes, content_type: str) -> Obj:
    value = decode_body(raw, content_type)
    if not isinstance(value, dict):
        raise BadRequest(
            f"request body must be a JSON object (a Kubernetes resource), not "
            f"{type(value).__name__}"
        )
    return value


# ---- patches --------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON Merge Patch: objects merge recursively, null deletes, anything else replaces.

    Server-side apply patches are applied with these rules; strategic merge patches have their
    own module (``knemu.apiserver.strategic``).
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


def _pointer(path: str) -> list[str]:
    # RFC 6901 JSON Pointer: "/a/b~1c" -> ["a", "b/c"]
    if path == "":
        return []
    if not path.startswith("/"):
        raise BadRequest(f"JSON patch path {path!r} must start with '/' (RFC 6901)")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _missing(path: str) -> BadRequest:
    return BadRequest(f"JSON patch path {path!r} does not exist")


def _index(array: list[Any], token: str, path: str, *, end_ok: bool) -> int:
    """An RFC 6901 array index; "-" (one past the end) only where RFC 6902 allows it."""
    if token == "-" and end_ok:
        return len(array)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise BadRequest(f"JSON patch path {path!r}: {token!r} is not an array index")
    index = int(token)
    if index > len(array) or (index == len(array) and not end_ok):
        raise BadRequest(f"JSON patch path {path!r}: index {index} is out of range")
    return index


def _child(node: Any, token: str, path: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, token, path, end_ok=False)]
    if isinstance(node, dict) and token in node:
        return node[token]
    raise _missing(path)


def _parent(doc: Any, parts: list[str], path: str) -> Any:
    node = doc
    for part in parts[:-1]:
        node = _child(node, part, path)
    return node


def _get(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    return _child(_parent(doc, parts, path), parts[-1], path) if parts else doc


def _remove(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        raise BadRequest("JSON patch cannot remove the whole document")
    parent = _parent(doc, parts, path)
    value = _child(parent, parts[-1], path)
    if isinstance(parent, list):
        del parent[_index(parent, parts[-1], path, end_ok=False)]
    else:
        del parent[parts[-1]]
    return value


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent = _parent(doc, parts, path)
    if isinstance(parent, list):
        parent.insert(_index(parent, parts[-1], path, end_ok=True), value)
    elif isinstance(parent, dict):
        parent[parts[-1]] = value
    else:
        raise BadRequest(f"JSON patch path {path!r}: parent is not an object or array")
    return doc


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902 JSON Patch: add, remove, replace, move, copy, test."""
    if not isinstance(ops, list):
        raise BadRequest("a JSON patch (RFC 6902) must be a list of operations")
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "path" not in op:
            raise BadRequest(f"JSON patch operation {op!r} needs 'op' and 'path'")
        name, path = op.get("op"), str(op["path"])
        if name == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif name == "remove":
            _remove(doc, path)
        elif name == "replace":
            _get(doc, path)  # must exist (RFC 6902 4.3)
            if _pointer(path):
                _remove(doc, path)
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif name in ("move", "copy"):
            source = str(op.get("from", ""))
            value = _remove(doc, source) if name == "move" else copy.deepcopy(_get(doc, source))
            doc = _add(doc, path, value)
        elif name == "test":
            if _get(doc, path) != op.get("value"):
                cause = FieldError(
                    path, f"JSON patch test failed: value is not {op.get('value')!r}"
                )
                raise Invalid("JSON patch", path, [cause])
        else:
            raise BadRequest(
                f"JSON patch op {name!r} is not one of add, remove, replace, move, copy, test"
            )
    return doc


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
    return result


# ---- field selectors ------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldRequirement:
    path: tuple[str, ...]
    equal: bool
    value: str


def parse_field_selector(text: str) -> list[FieldRequirement]:
    """``metadata.name=x,spec.nodeName!=y`` (=, ==, !=), as kubectl --field-selector."""
    reqs = []
    for term in filter(None, (t.strip() for t in text.split(","))):
        for op in ("!=", "==", "="):
            key, sep, value = term.partition(op)
            if sep:
                break
        if not sep or not key.strip():
            raise BadRequest(
                f"field selector term {term!r} is not FIELD=VALUE or FIELD!=VALUE "
                "(e.g. spec.nodeName=node-1)"
            )
        reqs.append(FieldRequirement(tuple(key.strip().split(".")), op != "!=", value.strip()))
    return reqs


def field_value(obj: Obj, path: tuple[str, ...]) -> str:
    node: Any = obj
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def fields_match(reqs: list[FieldRequirement], obj: Obj) -> bool:
    return all((field_value(obj, r.path) == r.value) == r.equal for r in reqs)


def check_preconditions(options: Obj, old: Obj) -> None:
    """DeleteOptions.preconditions (uid, resourceVersion) against the stored object."""
    pre = options.get("preconditions") or {}
    meta = old["metadata"]
    for key in ("uid", "resourceVersion"):
        if pre.get(key) and pre[key] != meta.get(key):
            raise Conflict(
                f"precondition failed: {key} is {meta.get(key)}, not {pre[key]}; read the "
                "object again"
            )


# ---- response shapes ------------------------------------------------------------------------


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


def _key(obj: Obj) -> list[str]:
    meta = obj.get("metadata", {})
    return [str(meta.get("namespace", "")), str(meta.get("name", ""))]


def paginate(items: list[Obj], limit: str, token: str) -> tuple[list[Obj], Obj]:
    """``limit`` / ``continue`` chunking of a list sorted by (namespace, name).

    https://kubernetes.io/docs/reference/using-api/api-concepts/#retrieving-large-results-sets-in-chunks
    The token records the last key returned; the next chunk starts after it in the current
    state (no snapshot is kept, so a chunked list is not one consistent read: objects written
    between chunks may or may not appear, like an inconsistent continue in Kubernetes).
    Returns the page and extra ListMeta fields (continue, remainingItemCount).
    """
    if token:
        try:
            start = json.loads(base64.urlsafe_b64decode(token.encode()))["start"]
        except (ValueError, KeyError, TypeError):
            raise BadRequest(
                "continue token is not valid: pass the metadata.continue of the previous list"
            ) from None
        items = [o for o in items if _key(o) > start]
    if not limit or limit == "0":
        return items, {}
    if not limit.isdigit():
        raise BadRequest(f"limit {limit!r} is not a positive whole number")
    page, rest = items[: int(limit)], items[int(limit) :]
    if not rest:
        return page, {}
    next_token = base64.urlsafe_b64encode(json.dumps({"start": _key(page[-1])}).encode())
    return page, {"continue": next_token.decode(), "remainingItemCount": len(rest)}


def object_list(api_version: str, list_kind: str, items: list[Obj], rv: int) -> Obj:
    return {
        "apiVersion": api_version,
        "kind": list_kind,
        "metadata": {"resourceVersion": str(rv)},
        "items": items,
    }


def scale_of(obj: Obj, selector: str) -> Obj:
    """autoscaling/v1 Scale view of a Deployment/ReplicaSet (the /scale subresource)."""
    meta = obj.get("metadata", {})
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": int(obj.get("spec", {}).get("replicas", 1))},
        "status": {
            "replicas": int(obj.get("status", {}).get("replicas", 0)),
            "selector": selector,
        },
    }


def selector_text(match_labels: Any) -> str:
    """spec.selector.matchLabels -> ``a=b,c=d`` (Scale.status.selector)."""
    if not isinstance(match_labels, dict):
        return ""
    return ",".join(f"{k}={v}" for k, v in sorted(match_labels.items()))
