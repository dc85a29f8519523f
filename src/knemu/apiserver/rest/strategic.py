"""Strategic merge patch (``application/strategic-merge-patch+json``), what ``kubectl patch``
sends by default.

A strategic merge patch is a JSON merge patch (RFC 7386) that knows the schema: lists whose Go
field carries ``patchStrategy:"merge"`` merge element by element on their ``patchMergeKey``
(containers by ``name``, container ports by ``containerPort``, service ports by ``port``, ...)
instead of being replaced, and a few directives steer the merge
(https://github.com/kubernetes/community/blob/master/contributors/devel/sig-api-machinery/strategic-merge-patch.md):

* ``{"$patch": "replace"}`` in a map replaces the map; in a list, the list;
* ``{"$patch": "delete"}`` in a map deletes it; in a list element, the element with that key;
* ``"$retainKeys": [...]`` keeps only those keys of the merged map;
* ``"$deleteFromPrimitiveList/<field>": [...]`` removes values from a merged primitive list;
* ``"$setElementOrder/<field>": [...]`` orders a merged list.

``null`` deletes a field, as in a merge patch.  Lists without a merge strategy are replaced.
"""

from __future__ import annotations

import copy
from typing import Any

from knemu.errors import LocalError


class BadPatch(LocalError):
    """A malformed strategic merge patch (HTTP 400 BadRequest)."""


# patchMergeKey of the list fields of the supported kinds (k8s.io/api core/v1, apps/v1,
# meta/v1 types).  "ports" is keyed by containerPort in containers and by port in services.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "conditions": "type",
    "ownerReferences": "uid",
    "topologySpreadConstraints": "topologyKey",
}
# Primitive lists with patchStrategy "merge": union, keeping the target's order.
PRIMITIVE_MERGE = frozenset({"finalizers"})

_PATCH = "$patch"
_RETAIN = "$retainKeys"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"
_ORDER = "$setElementOrder/"


def list_merge_key(field: str, items: list[Any]) -> str | None:
    """The key a list field merges on, or None when it is replaced as a whole."""
    if field == "ports":
        sample = next((i for i in items if isinstance(i, dict) and _PATCH not in i), None)
        return "containerPort" if sample is not None and "containerPort" in sample else "port"
    return MERGE_KEYS.get(field)


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Apply a strategic merge patch to a copy of ``target``."""
    if not isinstance(patch, dict):
        raise BadPatch("a strategic merge patch must be a JSON object")
    return _merge_map(target if isinstance(target, dict) else {}, patch)


def _merge_map(target: dict[str, Any], patch: dict[str, Any]) -> Any:
    directive = patch.get(_PATCH)
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != _PATCH}
    if directive == "delete":
        return None
    if directive not in (None, "merge"):
        raise BadPatch(f"strategic merge patch: unknown $patch directive {directive!r}")
    out = dict(target)
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            out.pop(key, None)
            continue
        merged = _merge_value(key, out.get(key), value)
        if merged is None:
            out.pop(key, None)
        else:
            out[key] = merged
    for key, value in patch.items():
        if key.startswith(_DELETE_PRIMITIVE):
            field = key[len(_DELETE_PRIMITIVE) :]
            if isinstance(out.get(field), list):
                out[field] = [v for v in out[field] if v not in _as_list(key, value)]
        elif key.startswith(_ORDER):
            field = key[len(_ORDER) :]
            if isinstance(out.get(field), list):
                out[field] = _ordered(field, out[field], _as_list(key, value))
    if _RETAIN in patch:
        keep = set(_as_list(_RETAIN, patch[_RETAIN]))
        out = {k: v for k, v in out.items() if k in keep}
    return out


def _merge_value(key: str, target: Any, patch: Any) -> Any:
    if isinstance(patch, dict):
        return _merge_map(target if isinstance(target, dict) else {}, patch)
    if isinstance(patch, list):
        return _merge_list(key, target if isinstance(target, list) else [], patch)
    return copy.deepcopy(patch)


def _merge_list(field: str, target: list[Any], patch: list[Any]) -> list[Any]:
    if any(isinstance(i, dict) and i.get(_PATCH) == "replace" for i in patch):
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and _PATCH in i)]
    if field in PRIMITIVE_MERGE:
        return list(target) + [copy.deepcopy(v) for v in patch if v not in target]
    key = list_merge_key(field, patch)
    if key is None or not all(isinstance(i, dict) for i in patch):
        return [copy.deepcopy(i) for i in patch]
    out = [copy.deepcopy(i) for i in target]
    for item in patch:
        if key not in item:
            raise BadPatch(f"strategic merge patch: an element of {field!r} lacks its key {key!r}")
        at = next(
            (n for n, t in enumerate(out) if isinstance(t, dict) and t.get(key) == item[key]),
            None,
        )
        if item.get(_PATCH) == "delete":
            if at is not None:
                del out[at]
        elif at is None:
            out.append(_merge_map({}, item))
        else:
            out[at] = _merge_map(out[at], item)
    return out


def _ordered(field: str, items: list[Any], order: list[Any]) -> list[Any]:
    """Items in the order ``$setElementOrder`` gives (by merge key, or by value for primitive
    lists); items it does not name keep their relative order after them."""
    key = list_merge_key(field, items) if all(isinstance(i, dict) for i in items) else None
    ident = [(i.get(key) if key and isinstance(i, dict) else i) for i in items]
    wanted = [(o.get(key) if key and isinstance(o, dict) else o) for o in order]
    rank = {v: n for n, v in enumerate(wanted) if _hashable(v)}
    indexed = sorted(
        range(len(items)),
        key=lambda n: (rank.get(ident[n], len(rank)) if _hashable(ident[n]) else len(rank), n),
    )
    return [items[n] for n in indexed]


def _as_list(key: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise BadPatch(f"strategic merge patch: {key!r} must be a list")
    return value


def _hashable(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) or value is None
