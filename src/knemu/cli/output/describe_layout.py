"""Layout of ``knemu describe`` output: Go tabwriter alignment and the sections kinds share.

Layouts follow kubectl's describers (k8s.io/kubectl pkg/describe/describe.go): ``Label:\\tvalue``
lines aligned like Go's tabwriter with padding 2 (a line without a tab ends an aligned block),
nested sections indented by two spaces per level.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from knemu.cli.client import Obj
from knemu.cli.manifests import LAST_APPLIED
from knemu.cli.output.printers import parse_time

NONE = "<none>"


class Writer:
    """Collects ``(level, cells)`` lines and aligns them like Go's tabwriter (padding 2)."""

    def __init__(self) -> None:
        self.lines: list[list[str]] = []

    def line(self, level: int, *cells: Any) -> None:
        texts = [str(c) for c in cells] or [""]
        texts[0] = "  " * level + texts[0]
        self.lines.append(texts)

    def render(self, padding: int = 2) -> str:
        widths: list[dict[int, int]] = [{} for _ in self.lines]
        self._format(0, len(self.lines), 0, widths, padding)
        out = []
        for cells, w in zip(self.lines, widths, strict=True):
            padded = [c.ljust(w.get(i, 0)) for i, c in enumerate(cells[:-1])]
            out.append("".join([*padded, cells[-1]]))
        return "\n".join(out) + "\n"

    def _format(
        self, start: int, end: int, col: int, widths: list[dict[int, int]], pad: int
    ) -> None:
        i = start
        while i < end:
            if len(self.lines[i]) - 1 <= col:  # no tab-terminated cell in this column
                i += 1
                continue
            j = i
            while j < end and len(self.lines[j]) - 1 > col:
                j += 1
            width = max(len(self.lines[k][col]) + pad for k in range(i, j))
            for k in range(i, j):
                widths[k][col] = width
            self._format(i, j, col + 1, widths, pad)
            i = j


def map_lines(w: Writer, level: int, title: str, values: dict[str, str] | None, sep: str) -> None:
    """``Title:  k<sep>v`` for the first pair, then one aligned line per further pair."""
    items = sorted((values or {}).items())
    if not items:
        w.line(level, f"{title}:", NONE)
        return
    for i, (k, v) in enumerate(items):
        w.line(level, f"{title}:" if i == 0 else "", f"{k}{sep}{v}")


def labels_and_annotations(w: Writer, meta: Obj) -> None:
    """Labels, then annotations without the last-applied one (kubectl hides it too)."""
    map_lines(w, 0, "Labels", meta.get("labels"), "=")
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != LAST_APPLIED}
    map_lines(w, 0, "Annotations", annotations, ": ")


def header(w: Writer, obj: Obj, namespaced: bool = True) -> None:
    meta = obj.get("metadata") or {}
    w.line(0, "Name:", meta.get("name", ""))
    if namespaced:
        w.line(0, "Namespace:", meta.get("namespace", ""))
    labels_and_annotations(w, meta)


def rfc1123(stamp: str | None) -> str:
    t = parse_time(stamp)
    if t is None:
        return NONE
    return datetime.fromtimestamp(t, UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")


def conditions_table(w: Writer, items: list[Obj]) -> None:
    if not items:
        return
    w.line(0, "Conditions:")
    w.line(1, "Type", "Status")
    for c in items:
        w.line(1, c.get("type", ""), c.get("status", ""))
