"""kubectl's JSONPath templates (``-o jsonpath=...``, ``-o custom-columns=...``).

Follows https://kubernetes.io/docs/reference/kubectl/jsonpath/: plain text with actions in
braces: ``{.metadata.name}``, ``{.items[*].metadata.name}``, ``{range .items[*]}...{end}``,
string literals ``{"\\n"}``, recursive descent ``{..name}``, ``[n]``, ``[a:b]``, ``[*]``,
unions ``['a','b']`` and filters ``[?(@.type=="Ready")]``.  As in kubectl >= 1.19, maps and
lists print as compact JSON and several results of one action are separated by a space; a
missing key prints nothing (``--allow-missing-template-keys`` defaults to true).

Pure functions over plain dicts: ``render(template, obj) -> str``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from knemu.errors import LocalError


class JsonPathError(LocalError):
    """A JSONPath template does not parse."""


@dataclass(frozen=True)
class Field:
    name: str  # "*" is every value


@dataclass(frozen=True)
class Recursive:
    name: str  # "*" is every descendant


@dataclass(frozen=True)
class Index:
    start: int | None
    stop: int | None = None
    step: int | None = None
    is_slice: bool = False


@dataclass(frozen=True)
class Union:
    keys: tuple[str | int, ...]


@dataclass(frozen=True)
class Filter:
    left: tuple[Segment, ...]
    op: str  # "" means "exists"
    right: Any  # a literal, or a tuple of segments for @.path


Segment = Field | Recursive | Index | Union | Filter


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Expr:
    path: tuple[Segment, ...]


@dataclass(frozen=True)
class Range:
    path: tuple[Segment, ...]
    body: tuple[Node, ...]


Node = Text | Expr | Range

_FIELD = re.compile(r"[A-Za-z0-9_\-/$]+|\*")
_FILTER = re.compile(
    r"\?\((?P<left>@[^=!<>]*?)\s*(?:(?P<op>==|!=|<=|>=|<|>)\s*(?P<right>.+?))?\s*\)$"
)


def parse_path(text: str) -> tuple[Segment, ...]:
    """Segments of one path such as ``.items[*].metadata.name`` (a leading $/@ is the root)."""
    src = text.strip()
    if src[:1] in ("$", "@"):
        src = src[1:]
    if src and src[0] not in ".[":
        src = "." + src  # kubectl's relaxed form: "metadata.name"
    segments: list[Segment] = []
    pos = 0
    while pos < len(src):
        pos = _parse_segment(src, pos, segments, text)
    return tuple(segments)


def _parse_segment(src: str, pos: int, out: list[Segment], whole: str) -> int:
    if src.startswith("..", pos):
        m = _FIELD.match(src, pos + 2)
        if not m:
            raise JsonPathError(f"jsonpath {whole!r}: expected a name after '..' at {pos}")
        out.append(Recursive(m.group()))
        return m.end()
    if src[pos] == ".":
        m = _FIELD.match(src, pos + 1)
        if not m:
            raise JsonPathError(f"jsonpath {whole!r}: expected a field name at {pos + 1}")
        out.append(Field(m.group()))
        return m.end()
    if src[pos] == "[":
        end = _matching_bracket(src, pos, whole)
        out.append(_parse_bracket(src[pos + 1 : end].strip(), whole))
        return end + 1
    raise JsonPathError(f"jsonpath {whole!r}: unexpected {src[pos]!r} at {pos}")


def _matching_bracket(src: str, pos: int, whole: str) -> int:
    depth, quote = 0, ""
    for i in range(pos, len(src)):
        ch = src[i]
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth == 0:
                return i
    raise JsonPathError(f"jsonpath {whole!r}: unclosed '['")


def _parse_bracket(inner: str, whole: str) -> Segment:
    if inner == "*":
        return Field("*")
    if inner.startswith("?"):
        return _parse_filter(inner, whole)
    if ":" in inner:
        parts = [p.strip() for p in inner.split(":")]
        nums = [int(p) if p else None for p in parts]
        return Index(nums[0], nums[1], nums[2] if len(nums) > 2 else None, True)
    keys: list[str | int] = []
    for part in (p.strip() for p in inner.split(",")):
        if part[:1] in "'\"" and part[-1:] == part[:1]:
            keys.append(part[1:-1])
        elif re.fullmatch(r"-?\d+", part):
            keys.append(int(part))
        else:
            raise JsonPathError(f"jsonpath {whole!r}: cannot parse [{inner}]")
    if len(keys) == 1 and isinstance(keys[0], int):
        return Index(keys[0])
    if len(keys) == 1:
        return Field(str(keys[0]))
    return Union(tuple(keys))


def _parse_filter(inner: str, whole: str) -> Filter:
    m = _FILTER.match(inner)
    if not m:
        raise JsonPathError(f"jsonpath {whole!r}: cannot parse filter [{inner}]")
    left = parse_path(m.group("left"))
    op, right_text = m.group("op") or "", (m.group("right") or "").strip()
    right: Any = None
    if op:
        if right_text.startswith("@"):
            right = parse_path(right_text)
        elif right_text[:1] in "'\"":
            right = right_text[1:-1]
        else:
            try:
                right = json.loads(right_text)
            except ValueError:
                raise JsonPathError(f"jsonpath {whole!r}: bad value {right_text!r}") from None
    return Filter(left, op, right)


def parse_template(template: str) -> tuple[Node, ...]:
    """Nodes of a template; ``{range}`` blocks are nested until their ``{end}``."""
    stack: list[tuple[tuple[Segment, ...], list[Node]]] = [((), [])]
    for kind, value in _scan(template):
        if kind == "text":
            stack[-1][1].append(Text(value))
        elif value.startswith("range ") or value == "range":
            stack.append((parse_path(value[5:]), []))
        elif value == "end":
            if len(stack) == 1:
                raise JsonPathError(f"jsonpath {template!r}: {{end}} without {{range}}")
            path, body = stack.pop()
            stack[-1][1].append(Range(path, tuple(body)))
        elif value[:1] == '"':
            stack[-1][1].append(Text(_unquote(value, template)))
        else:
            stack[-1][1].append(Expr(parse_path(value)))
    if len(stack) != 1:
        raise JsonPathError(f"jsonpath {template!r}: {{range}} without {{end}}")
    return tuple(stack[0][1])


def _scan(template: str) -> Iterator[tuple[str, str]]:
    pos = 0
    while pos < len(template):
        start = template.find("{", pos)
        if start < 0:
            yield "text", template[pos:]
            return
        if start > pos:
            yield "text", template[pos:start]
        end = _action_end(template, start)
        yield "action", template[start + 1 : end].strip()
        pos = end + 1


def _action_end(template: str, start: int) -> int:
    quote = False
    i = start + 1
    while i < len(template):
        ch = template[i]
        if ch == "\\" and quote:
            i += 2
            continue
        if ch == '"':
            quote = not quote
        elif ch == "}" and not quote:
            return i
        i += 1
    raise JsonPathError(f"jsonpath {template!r}: unclosed '{{' at {start}")


def _unquote(literal: str, template: str) -> str:
    try:
        value = json.loads(literal, strict=False)
    except ValueError:
        raise JsonPathError(f"jsonpath {template!r}: bad string literal {literal}") from None
    return str(value)


# -- evaluation -------------------------------------------------------------------------------


def evaluate(path: tuple[Segment, ...], root: Any) -> list[Any]:
    """Every value the path selects from root (an empty list if it selects nothing)."""
    values = [root]
    for seg in path:
        values = [out for v in values for out in _STEP[type(seg)](seg, v)]
    return values


def _children(v: Any) -> list[Any]:
    if isinstance(v, dict):
        return [v[k] for k in sorted(v)]
    if isinstance(v, list):
        return list(v)
    return []


def _step_field(seg: Any, v: Any) -> list[Any]:
    if seg.name == "*":
        return _children(v)
    if isinstance(v, dict) and seg.name in v:
        return [v[seg.name]]
    return []


def _step_recursive(seg: Any, v: Any) -> list[Any]:
    found: list[Any] = []
    todo = [v]
    while todo:
        cur = todo.pop(0)
        if seg.name == "*":
            found.extend(_children(cur))
        elif isinstance(cur, dict) and seg.name in cur:
            found.append(cur[seg.name])
        todo.extend(_children(cur))
    return found


def _step_index(seg: Any, v: Any) -> list[Any]:
    if not isinstance(v, list):
        return []
    if seg.is_slice:
        return list(v[seg.start : seg.stop : seg.step])
    i = seg.start
    return [v[i]] if -len(v) <= i < len(v) else []


def _step_union(seg: Any, v: Any) -> list[Any]:
    out: list[Any] = []
    for key in seg.keys:
        out.extend(
            _step_index(Index(key), v) if isinstance(key, int) else _step_field(Field(key), v)
        )
    return out


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
}


def _step_filter(seg: Any, v: Any) -> list[Any]:
    return [item for item in _children(v) if _matches(seg, item)]


def _matches(seg: Filter, item: Any) -> bool:
    lefts = evaluate(seg.left, item)
    if not seg.op:
        return bool(lefts)
    rights = evaluate(seg.right, item) if isinstance(seg.right, tuple) else [seg.right]
    try:
        return any(_OPS[seg.op](a, b) for a in lefts for b in rights)
    except TypeError:  # comparing a string with a number: no match, as in kubectl
        return False


_STEP: dict[type, Callable[[Any, Any], list[Any]]] = {
    Field: _step_field,
    Recursive: _step_recursive,
    Index: _step_index,
    Union: _step_union,
    Filter: _step_filter,
}


def format_value(value: Any) -> str:
    """One result as kubectl prints it: strings raw, maps and lists as compact JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return str(value)


def _render_nodes(nodes: tuple[Node, ...], current: Any, out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, Text):
            out.append(node.text)
        elif isinstance(node, Expr):
            out.append(" ".join(format_value(v) for v in evaluate(node.path, current)))
        else:
            for item in evaluate(node.path, current):
                _render_nodes(node.body, item, out)


def render(template: str, obj: Any) -> str:
    """Apply a kubectl JSONPath template to an object (or a List) and return the text."""
    out: list[str] = []
    _render_nodes(parse_template(template), obj, out)
    return "".join(out)
