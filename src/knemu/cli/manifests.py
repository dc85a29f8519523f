"""Loading manifests for ``apply -f`` / ``delete -f``: files, directories, stdin; YAML or JSON.

Like kubectl: a directory means its ``.yaml``/``.yml``/``.json`` files in name order, a YAML
stream may hold several ``---`` documents, a ``kind: List`` expands to its items, and empty
documents are skipped.

kubectl's YAML reader tolerates trailing TABs after values (seed 002's manifests have them),
which YAML 1.1/1.2 scanners such as PyYAML reject ("found character '\\t' that cannot start any
token").  When parsing fails on a TAB we retry once with trailing whitespace stripped from every
line that is not inside a block scalar (``|`` / ``>``), where whitespace is content.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from knemu import yamlload
from knemu.errors import LocalError

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
# The annotation where `apply` records the manifest it applied (the base of its 3-way merge).
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
STDIN = "-"


class ManifestError(LocalError):
    """A manifest file cannot be read or parsed."""


@dataclass(frozen=True)
class Document:
    source: str  # file name, or "-" for stdin
    index: int  # 1-based position in its file's document stream
    obj: dict[str, Any]

    @property
    def label(self) -> str:
        """``Kind/name`` for error messages."""
        meta = self.obj.get("metadata") or {}
        return f"{self.obj.get('kind', '?')}/{meta.get('name') or meta.get('generateName') or '?'}"


def expand_paths(paths: list[str]) -> list[str]:
    """Files named by ``-f`` arguments, with directories expanded (not recursively)."""
    files: list[str] = []
    for p in paths:
        if p == STDIN:
            files.append(p)
            continue
        path = Path(p)
        if path.is_dir():
            found = sorted(str(f) for f in path.iterdir() if f.suffix in MANIFEST_SUFFIXES)
            if not found:
                raise ManifestError(f"{p}: directory has no .yaml, .yml or .json files")
            files += found
        elif path.exists():
            files.append(p)
        else:
            raise ManifestError(f'the path "{p}" does not exist')
    return files


def read_source(name: str, stdin: TextIO | None = None) -> str:
    if name == STDIN:
        return (stdin or sys.stdin).read()
    try:
        return Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read {name}: {exc}") from None


def load_paths(paths: list[str], stdin: TextIO | None = None) -> list[Document]:
    """Every document of every file, in order; raises ManifestError naming file/line/column."""
    docs: list[Document] = []
    for name in expand_paths(paths):
        docs += parse_documents(read_source(name, stdin), name)
    return docs


def parse_documents(text: str, source: str) -> list[Document]:
    """Documents of one file (YAML stream or JSON), each checked to be an object."""
    raw = _parse_json(text, source) if text.lstrip()[:1] in ("{", "[") else None
    if raw is None:
        raw = _parse_yaml(text, source)
    docs: list[Document] = []
    for index, obj in raw:
        for item in _expand_list(obj, source, index):
            docs.append(Document(source, index, item))
    return docs


def _expand_list(obj: Any, source: str, index: int) -> Iterator[dict[str, Any]]:
    if not isinstance(obj, dict):
        raise ManifestError(
            f"{source}: document {index}: expected a mapping with apiVersion and kind, "
            f"got {type(obj).__name__}"
        )
    if obj.get("kind") == "List" or (str(obj.get("kind", "")).endswith("List") and "items" in obj):
        for item in obj.get("items") or []:
            yield from _expand_list(item, source, index)
        return
    yield obj


def _parse_json(text: str, source: str) -> list[tuple[int, Any]] | None:
    """A JSON object, array of objects, or a stream of objects; None if it is not JSON."""
    decoder = json.JSONDecoder()
    out: list[tuple[int, Any]] = []
    pos = 0
    try:
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos >= len(text):
                break
            value, pos = decoder.raw_decode(text, pos)
            for v in value if isinstance(value, list) else [value]:
                out.append((len(out) + 1, v))
    except json.JSONDecodeError:
        return None  # YAML's flow style also starts with { or [: let the YAML parser decide
    return out


def _parse_yaml(text: str, source: str) -> list[tuple[int, Any]]:
    try:
        return _load_all(text)
    except yaml.MarkedYAMLError as exc:
        if "\\t" not in str(exc) and "tab" not in str(exc).lower():
            raise _yaml_error(exc, source) from None
        try:
            return _load_all(strip_trailing_whitespace(text))
        except yaml.MarkedYAMLError as retry:
            raise _yaml_error(retry, source) from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{source}: invalid YAML: {exc}") from None


def _load_all(text: str) -> list[tuple[int, Any]]:
    return [(i, d) for i, d in enumerate(yamlload.safe_load_all(text), start=1) if d is not None]


def _yaml_error(exc: yaml.MarkedYAMLError, source: str) -> ManifestError:
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
    what = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
    return ManifestError(f"{source}: {where}: {what}")


# A line whose value is a block scalar indicator (YAML 1.2 section 8.1): `key: |`, `- >-`, ...
_BLOCK_START = re.compile(r"(?:^|[:\-]\s)\s*[|>][0-9+\-]*\s*(?:#.*)?$")


def strip_trailing_whitespace(text: str) -> str:
    """Strip trailing spaces/TABs from every line outside block scalars."""
    out: list[str] = []
    block_indent: int | None = None  # indent of the line that opened the block scalar
    for line in text.split("\n"):
        stripped = line.rstrip(" \t\r")
        indent = len(line) - len(line.lstrip(" "))
        if block_indent is not None and (not stripped or indent > block_indent):
            out.append(line)  # inside a block scalar: whitespace is content
            continue
        block_indent = None
        out.append(stripped + ("\r" if line.endswith("\r") else ""))
        if _BLOCK_START.search(stripped):
            block_indent = indent
    return "\n".join(out)
