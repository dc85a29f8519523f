"""Output of ``knemu get``: kubectl's tables, from the shared column logic in
``knemu.columns`` (the api-server's Table responses use the same)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from knemu.cli.client import ResourceType
from knemu.columns import (
    NONE,
    TABLES,
    Obj,
    TableSpec,
    age_of,
    endpoints_addresses,
    event_time,
    format_table,
    human_age,
    join_labels,
    node_internal_ip,
    node_status,
    parse_time,
    pod_status,
    service_external_ip,
    service_ports,
)

__all__ = [
    "NONE",
    "TABLES",
    "Obj",
    "TableOptions",
    "TableSpec",
    "age_of",
    "endpoints_addresses",
    "event_time",
    "format_table",
    "human_age",
    "join_labels",
    "node_internal_ip",
    "node_status",
    "parse_time",
    "pod_status",
    "print_table",
    "service_external_ip",
    "service_ports",
    "table_headers",
    "table_row",
]


@dataclass(frozen=True)
class TableOptions:
    wide: bool = False
    all_namespaces: bool = False
    show_labels: bool = False
    headers: bool = True
    kind_prefix: bool = False  # several kinds in one get: NAME is kind/name, as kubectl


def table_headers(rt: ResourceType, opts: TableOptions) -> list[str]:
    spec = TABLES[rt.kind]
    first = [] if rt.kind == "Event" else ["NAME"]
    headers = first + list(spec.columns) + (list(spec.wide) if opts.wide else [])
    if opts.all_namespaces and rt.namespaced:
        headers.insert(0, "NAMESPACE")
    return headers + (["LABELS"] if opts.show_labels else [])


def table_row(rt: ResourceType, obj: Obj, now: float, opts: TableOptions) -> list[str]:
    meta = obj.get("metadata") or {}
    name = str(meta.get("name", ""))
    first = [] if rt.kind == "Event" else [f"{rt.qualified}/{name}" if opts.kind_prefix else name]
    row = first + TABLES[rt.kind].row(obj, now, opts.wide)
    if opts.all_namespaces and rt.namespaced:
        row.insert(0, str(meta.get("namespace", "")))
    return row + ([join_labels(meta.get("labels"))] if opts.show_labels else [])


def print_table(rt: ResourceType, objs: Sequence[Obj], now: float, opts: TableOptions) -> str:
    headers = table_headers(rt, opts) if opts.headers else []
    return format_table(headers, [table_row(rt, o, now, opts) for o in objs])
