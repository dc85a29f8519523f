"""``GET /containerLogs/{ns}/{pod}/{container}``: a container's output, with the kubelet's
options (PodLogOptions, https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/
pod-v1/#get-read-log-of-the-specified-pod).

The log file holds every run of the container; each run's start offset is known
(``Runner.log_start``, ``previous_start``), so the current run's output is served, or with
``previous=true`` the one before it (400 when there was none, worded as the kubelet words
it).  ``tailLines`` keeps the last lines, ``limitBytes`` stops after that many bytes (also
when following).  The output is not recorded with per-line times, so ``timestamps``,
``sinceSeconds`` and ``sinceTime`` are refused with that reason rather than ignored.
``plan_logs`` and ``select`` are pure; ``serve_logs`` streams.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aiohttp import web

from knemu.errors import LocalError

POLL_S = 0.2  # how often a followed log file is checked for new bytes
_UNRECORDED = ("timestamps", "sinceSeconds", "sinceTime")


class BadLogRequest(LocalError):
    http_status = 400
    reason = "BadRequest"


@dataclass(frozen=True)
class LogOptions:
    follow: bool = False
    previous: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None


def _flag(value: str | None) -> bool:
    return value in ("1", "true", "True")


def _positive(query: Mapping[str, str], name: str, minimum: int) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadLogRequest(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum:
        raise BadLogRequest(f"{name}: Invalid value: {value}: must be >= {minimum}")
    return value


def plan_logs(query: Mapping[str, str]) -> LogOptions:
    for name in _UNRECORDED:
        if query.get(name) not in (None, "", "false", "0"):
            raise BadLogRequest(
                f"{name} is not supported by knemu's kubelet yet: container output is not "
                "recorded with per-line times; use tailLines or limitBytes instead"
            )
    return LogOptions(
        follow=_flag(query.get("follow")),
        previous=_flag(query.get("previous")),
        tail_lines=_positive(query, "tailLines", 0),
        limit_bytes=_positive(query, "limitBytes", 1),
    )


def select(data: bytes, start: int, end: int | None, opts: LogOptions) -> bytes:
    """The bytes of one run (``data[start:end]``), tailed and limited."""
    out = data[start:end]
    if opts.tail_lines is not None:
        out = b"".join(out.splitlines(keepends=True)[-opts.tail_lines :] if opts.tail_lines else [])
    if opts.limit_bytes is not None:
        out = out[: opts.limit_bytes]
    return out


class RunSource(Protocol):
    """What the log endpoint needs of a container's runner."""

    log_path: Path
    log_start: int
    previous_start: int | None


def run_range(
    runner: RunSource, opts: LogOptions, pod: str, container: str
) -> tuple[int, int | None]:
    """The byte range of the run asked for: the current one, or the previous one."""
    if not opts.previous:
        return runner.log_start, None
    if runner.previous_start is None:
        raise BadLogRequest(f'previous terminated container "{container}" in pod "{pod}" not found')
    return runner.previous_start, runner.log_start


async def serve_logs(
    request: web.Request, runner: RunSource, pod: str, container: str,
    running: Callable[[], bool],
) -> web.StreamResponse:  # fmt: skip
    """Raises BadLogRequest before anything is sent; then streams."""
    opts = plan_logs(request.query)
    start, end = run_range(runner, opts, pod, container)
    try:
        data = runner.log_path.read_bytes()
    except FileNotFoundError:
        data = b""
    first = select(data, start, end, opts)
    resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await resp.prepare(request)
    await resp.write(first)
    budget = None if opts.limit_bytes is None else opts.limit_bytes - len(first)
    offset = len(data)
    while opts.follow and not opts.previous and running() and budget != 0:
        await asyncio.sleep(POLL_S)  # tail -f: the log is a plain file
        chunk = _read_from(runner.log_path, offset)
        offset += len(chunk)
        if budget is not None:
            chunk, budget = chunk[:budget], max(0, budget - len(chunk))
        if chunk:
            await resp.write(chunk)
    await resp.write_eof()
    return resp


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read()
    except FileNotFoundError:
        return b""
