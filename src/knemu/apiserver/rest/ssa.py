"""Server-side apply: field ownership (``metadata.managedFields``), conflicts, removal.

As https://kubernetes.io/docs/reference/using-api/server-side-apply/ describes:

* an apply request names its manager (``fieldManager``); the fields its configuration sets
  become that manager's, recorded as a ``FieldsV1`` set (``f:<field>`` for map keys,
  ``k:{"<key>":<value>}`` for elements of lists merged by key, e.g. containers by name);
* setting a field another manager owns to a different value is a conflict: 409 listing each
  field and its managers, unless ``force=true``, which takes the fields over;
* a field the manager set before and no longer sets is removed, unless another manager
  owns it too;
* lists without a merge key and scalars are atomic: owned and replaced as a whole.

Pure: the live object, the configuration, the manager and a timestamp in; the object to
store out, with its managedFields.  Non-apply writes keep the managedFields they find.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from knemu.apiserver.rest.patches import merge_patch
from knemu.apiserver.rest.strategic import list_merge_key
from knemu.errors import FieldError, LocalError

Obj = dict[str, Any]
Path = tuple[str, ...]
# Identity and bookkeeping: never owned (upstream strips them from the managed set).
_UNMANAGED: frozenset[Path] = frozenset({
    ("f:apiVersion",), ("f:kind",), ("f:metadata", "f:name"), ("f:metadata", "f:namespace"),
    ("f:metadata", "f:managedFields"), ("f:metadata", "f:resourceVersion"),
    ("f:metadata", "f:uid"), ("f:metadata", "f:creationTimestamp"), ("f:status",),
})  # fmt: skip


@dataclass
class ApplyConflict(LocalError):
    """Apply would change fields another manager owns (HTTP 409 Conflict)."""

    text: str
    causes: list[FieldError] = field(default_factory=list)

    http_status = 409
    reason = "Conflict"

    def __post_init__(self) -> None:
        super().__init__(self.text)


def _key_element(item: Obj, key: str) -> str:
    return "k:" + json.dumps({key: item.get(key)}, separators=(",", ":"))


def field_paths(config: Any, prefix: Path = ()) -> set[Path]:
    """The leaf paths a configuration sets (FieldsV1 elements)."""
    if isinstance(config, dict) and config:
        out: set[Path] = set()
        for k, v in config.items():
            out |= field_paths(v, (*prefix, f"f:{k}"))
        return out
    if isinstance(config, list) and config and prefix:
        key = list_merge_key(prefix[-1].removeprefix("f:"), config)
        if key and all(isinstance(i, dict) and key in i for i in config):
            out = set()
            for item in config:
                element = (*prefix, _key_element(item, key))
                out |= {element} | field_paths(item, element)
            return out
    return {prefix}


def managed_paths(config: Obj) -> set[Path]:
    return {p for p in field_paths(config) if p and not any(p[: len(u)] == u for u in _UNMANAGED)}


def to_fields_v1(paths: set[Path]) -> Obj:
    tree: Obj = {}
    for path in sorted(paths):
        node = tree
        for i, part in enumerate(path):
            node = node.setdefault(part, {})
            if part.startswith("k:") and i < len(path) - 1:
                node.setdefault(".", {})
    return tree


def from_fields_v1(tree: Any, prefix: Path = ()) -> set[Path]:
    if not isinstance(tree, dict) or not tree:
        return {prefix} if prefix else set()
    out: set[Path] = {prefix} if "." in tree and prefix else set()
    for part, sub in tree.items():
        if part != ".":
            out |= from_fields_v1(sub, (*prefix, part))
    return out


def _step(value: Any, part: str) -> tuple[bool, Any]:
    if part.startswith("f:") and isinstance(value, dict):
        name = part[2:]
        return (name in value, value.get(name))
    if part.startswith("k:") and isinstance(value, list):
        want = json.loads(part[2:])
        for item in value:
            if isinstance(item, dict) and all(item.get(k) == v for k, v in want.items()):
                return True, item
    return False, None


def value_at(obj: Any, path: Path) -> tuple[bool, Any]:
    for part in path:
        found, obj = _step(obj, part)
        if not found:
            return False, None
    return True, obj


def remove_at(obj: Any, path: Path) -> None:
    found, parent = value_at(obj, path[:-1])
    last = path[-1]
    if not found:
        return
    if last.startswith("f:") and isinstance(parent, dict):
        parent.pop(last[2:], None)
    elif last.startswith("k:") and isinstance(parent, list):
        ok, item = _step(parent, last)
        if ok:
            parent.remove(item)


def _entries(live: Obj) -> list[Obj]:
    entries = (live.get("metadata") or {}).get("managedFields") or []
    return [e for e in entries if isinstance(e, dict)]


def _conflict_text(conflicts: dict[Path, list[str]], api_version: str) -> str:
    def show(path: Path) -> str:
        return "".join("." + p[2:] if p.startswith("f:") else f"[{p[2:]}]" for p in path)

    managers = sorted({m for ms in conflicts.values() for m in ms})
    count = len(conflicts)
    head = f"Apply failed with {count} conflict{'s' if count > 1 else ''}: "
    who = ", ".join(f'"{m}"' for m in managers)
    if count == 1:
        (path,) = conflicts
        return head + f"conflict with {who} using {api_version}: {show(path)}"
    lines = "\n".join(f"- {show(p)}" for p in sorted(conflicts))
    return head + f"conflicts with {who} using {api_version}:\n{lines}"


def apply(live: Obj, config: Obj, manager: str, force: bool, stamp: str) -> Obj:
    """The object after ``manager`` applies ``config`` to ``live`` ({} when new)."""
    config = copy.deepcopy(config)
    config.get("metadata", {}).pop("managedFields", None)
    mine = managed_paths(config)
    api_version = str(config.get("apiVersion") or live.get("apiVersion") or "v1")
    others: list[tuple[Obj, set[Path]]] = []
    previous: set[Path] = set()
    for entry in _entries(live):
        paths = from_fields_v1(entry.get("fieldsV1"))
        if entry.get("manager") == manager and entry.get("operation") == "Apply":
            previous = paths
        else:
            others.append((entry, paths))
    # A keyed list element is also a path of its own; its fields are compared, not all of it
    # (the live element carries defaults the configuration does not set).
    elements = {p[:i] for p in mine for i in range(1, len(p))}
    conflicts: dict[Path, list[str]] = {}
    for entry, paths in others:
        for path in (mine & paths) - elements:
            if value_at(live, path) != value_at(config, path):
                conflicts.setdefault(path, []).append(str(entry.get("manager")))
    if conflicts and not force:
        causes = [FieldError("." + ".".join(p[2:] for p in path),
                             f'conflict with "{", ".join(ms)}"', "FieldManagerConflict")
                  for path, ms in sorted(conflicts.items())]  # fmt: skip
        raise ApplyConflict(_conflict_text(conflicts, api_version), causes)
    owned_by_others: set[Path] = set()
    kept = []
    for entry, paths in others:
        paths = paths - set(conflicts)  # force: the applier takes them over
        owned_by_others |= paths
        if paths:
            kept.append({**entry, "fieldsV1": to_fields_v1(paths)})
    result = merge_patch(copy.deepcopy(live), config)
    for path in sorted(previous - mine - owned_by_others, key=len, reverse=True):
        remove_at(result, path)
    entry = {"manager": manager, "operation": "Apply", "apiVersion": api_version,
             "time": stamp, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(mine)}  # fmt: skip
    result.setdefault("metadata", {})["managedFields"] = [*kept, entry]
    return dict(result)
