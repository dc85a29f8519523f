"""Server-side printing: ``meta.k8s.io`` Table responses, as kube-apiserver gives kubectl.

``kubectl get`` asks with ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io`` and prints
the columns the server defines (https://kubernetes.io/docs/reference/using-api/api-concepts/
#receiving-resources-as-tables).  Columns of priority 0 are the default view, priority 1 the
``-o wide`` extras; each row carries the object as ``includeObject`` asks: ``None``,
``Object``, or (the default) ``PartialObjectMetadata``, from which kubectl takes the
namespace and labels for ``-A`` and ``--show-labels``.  The cells come from
``knemu.columns``, the printers knemu's own CLI uses, so both print what a real cluster prints.

Pure: objects and ``now`` in, a Table dict out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from knemu.columns import TABLES, age_of
from knemu.errors import LocalError

Obj = dict[str, Any]
INCLUDE_OBJECT = ("None", "Object", "PartialObjectMetadata")
_NAME_DESCRIPTION = (
    "Name must be unique within a namespace. Is required when creating resources, although "
    "some resources may allow a client to request the generation of an appropriate name "
    "automatically."
)


class BadTableRequest(LocalError):
    http_status = 400
    reason = "BadRequest"
    grpc_code = "INVALID_ARGUMENT"


def requested_version(accept: str) -> str | None:
    """``v1`` / ``v1beta1`` when the Accept header asks for a meta.k8s.io Table first among
    what it accepts as JSON; None when the client wants plain objects."""
    for media in accept.split(","):
        parts = [p.strip() for p in media.split(";")]
        if parts[0] not in ("application/json", "*/*"):
            continue
        params = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        if params.get("as") != "Table":
            return None  # plain JSON comes before any Table
        if params.get("g") == "meta.k8s.io" and params.get("v") in ("v1", "v1beta1"):
            return params["v"]
    return None


def _column(name: str, priority: int, description: str = "") -> Obj:
    return {
        "name": name,
        "type": "string",
        "format": "name" if name == "NAME" else "",
        "description": description or f"{name.title()} as kubectl prints it.",
        "priority": priority,
    }


def columns(kind: str) -> list[Obj]:
    """The column definitions of ``kind`` (NAME and AGE only for a kind with no printer)."""
    spec = TABLES.get(kind)
    if spec is None:
        return [_column("NAME", 0, _NAME_DESCRIPTION), _column("AGE", 0)]
    cols = [] if kind == "Event" else [_column("NAME", 0, _NAME_DESCRIPTION)]
    cols += [_column(c, 0) for c in spec.columns] + [_column(c, 1) for c in spec.wide]
    if kind == "Event":  # upstream lists an event's name last, as a wide column
        cols.append(_column("NAME", 1, _NAME_DESCRIPTION))
    return cols


def cells(obj: Obj, now: float) -> list[str]:
    kind = obj.get("kind", "")
    meta = obj.get("metadata") or {}
    name = str(meta.get("name", ""))
    spec = TABLES.get(kind)
    if spec is None:
        return [name, age_of(meta.get("creationTimestamp"), now)]
    row = spec.row(obj, now, True)
    return [*row, name] if kind == "Event" else [name, *row]


def _row_object(obj: Obj, include: str, version: str) -> Obj | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": f"meta.k8s.io/{version}",
        "metadata": obj.get("metadata") or {},
    }


def table(
    kind: str,
    objs: list[Obj],
    now: float,
    *,
    version: str = "v1",
    include_object: str = "PartialObjectMetadata",
    list_meta: Obj | None = None,
    with_columns: bool = True,
) -> Obj:
    """A Table of ``objs`` (all of ``kind``); ``with_columns=False`` for watch events after
    the first, as the api-server sends column definitions once per watch."""
    if include_object not in INCLUDE_OBJECT:
        raise BadTableRequest(
            f"includeObject={include_object!r} is not supported: use one of "
            + ", ".join(INCLUDE_OBJECT)
        )
    rows = []
    for obj in objs:
        row: Obj = {"cells": cells(obj, now)}
        embedded = _row_object(obj, include_object, version)
        if embedded is not None:
            row["object"] = embedded
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": f"meta.k8s.io/{version}",
        "metadata": list_meta or {},
        "columnDefinitions": columns(kind) if with_columns else [],
        "rows": rows,
    }


def watch_transform(
    accept: str, query: Mapping[str, str], clock: Callable[[], float]
) -> Callable[[Obj], Obj] | None:
    """For a watch that asked for Tables: each event's object as a one-row Table, the column
    definitions in the first only (as kube-apiserver's watch does); None otherwise."""
    version = requested_version(accept)
    if version is None:
        return None
    include = query.get("includeObject", "PartialObjectMetadata")
    table("", [], 0.0, include_object=include)  # reject a bad includeObject before streaming
    sent_columns = False

    def transform(obj: Obj) -> Obj:
        nonlocal sent_columns
        out = table(obj.get("kind", ""), [obj], clock(), version=version,
                    include_object=include, with_columns=not sent_columns)  # fmt: skip
        out["metadata"] = {"resourceVersion": (obj.get("metadata") or {}).get("resourceVersion")}
        sent_columns = True
        return out

    return transform
