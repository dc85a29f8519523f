"""``-o`` formats other than tables (kubectl's printers): json, yaml, name, custom-columns,
jsonpath, and the v1 List several objects are printed as."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import yaml

from knemu.cli.client import Obj, ResourceType
from knemu.cli.output.jsonpath import JsonPathError, evaluate, parse_path, render as render_template
from knemu.cli.output.printers import NONE, format_table
from knemu.errors import LocalError


def as_list(objs: Sequence[Obj]) -> Obj:
    """What kubectl prints for several objects: a v1 List."""
    return {
        "apiVersion": "v1",
        "items": list(objs),
        "kind": "List",
        "metadata": {"resourceVersion": ""},
    }


def print_json(doc: Obj) -> str:
    return json.dumps(doc, indent=4, sort_keys=True, ensure_ascii=False) + "\n"


def print_yaml(doc: Obj) -> str:
    return str(yaml.safe_dump(doc, sort_keys=True, default_flow_style=False, allow_unicode=True))


def print_names(rt: ResourceType, objs: Sequence[Obj]) -> str:
    return "".join(f"{rt.qualified}/{(o.get('metadata') or {}).get('name', '')}\n" for o in objs)


def parse_custom_columns(spec: str) -> list[tuple[str, str]]:
    """``NAME:{metadata.name},IP:.status.podIP`` -> [(header, path)], checked up front."""
    columns = []
    for part in spec.split(","):
        header, sep, path = part.partition(":")
        if not sep or not header or not path:
            raise LocalError(
                f"custom-columns: {part!r} is not HEADER:JSONPATH "
                '(for example NAME:.metadata.name or "NAME:{metadata.name}")'
            )
        path = path.strip()
        if path.startswith("{") and path.endswith("}"):
            path = path[1:-1]  # kubectl's RelaxedJSONPathExpression accepts {...}
        parse_path(path)
        columns.append((header, path))
    return columns


def _go_value(value: Any) -> str:
    """A cell as Go's %v prints it (custom-columns uses fmt.Sprintf("%v"))."""
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go_value(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_go_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def print_custom_columns(spec: str, objs: Sequence[Obj], headers: bool = True) -> str:
    columns = parse_custom_columns(spec)
    rows = []
    for obj in objs:
        row = []
        for _, path in columns:
            values = evaluate(parse_path(path), obj)
            row.append(",".join(_go_value(v) for v in values) if values else NONE)
        rows.append(row)
    return format_table([h for h, _ in columns] if headers else [], rows)


def print_jsonpath(template: str, doc: Obj) -> str:
    try:
        return render_template(template, doc)
    except JsonPathError:
        raise
    except (TypeError, ValueError) as exc:
        raise JsonPathError(f"error executing jsonpath {template!r}: {exc}") from None
