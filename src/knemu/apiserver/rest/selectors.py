"""Which objects a list answer holds: field selectors and ``limit``/``continue`` paging."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from knemu.apiserver.rest.status import BadRequest, Obj


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
