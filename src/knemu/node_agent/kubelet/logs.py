"""``GET /containerLogs/{ns}/{pod}/{container}``: a container's output, with the kubelet's
options (PodLogOptions, https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/
pod-v1/#get-read-log-of-the-specified-pod).

The log file holds every run of the container; each run's start offset is known
(``Runner.log_start``, ``previous_start``), so the current run's output is served, or with
``previous=true`` the one before it (400 when there was none, worded as the kubelet words
it).  ``tailLines`` keeps the last lines, ``limitBytes`` stops after that many bytes (also
when following).  The container writes the file itself (so it survives an agent restart);
the agent watches the file grow (``runtime/log_index.py:LogIndex``, every
``Runner.LOG_WATCH_S``) and a line's time for ``timestamps``, ``sinceSeconds`` and
``sinceTime`` is when the agent first saw it:
within that interval of when it was written (DEVIATION: the kubelet's CRI log records the
write time).  ``plan_logs`` and ``select`` are pure; ``serve_logs`` streams.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aiohttp import web

from knemu.errors import LocalError
from knemu.node_agent.runtime.log_index import LogIndex

POLL_S = 0.2  # how often a followed log file is checked for new bytes


class BadLogRequest(LocalError):
    http_status = 400
    reason = "BadRequest"


@dataclass(frozen=True)
class LogOptions:
    follow: bool = False
    previous: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None
    timestamps: bool = False
    since: float | None = None  # seconds since the epoch (sinceTime, or now - sinceSeconds)


def rfc3339_nano(t: float) -> str:
    """Go's time.RFC3339Nano in UTC, as the kubelet prefixes lines (trailing zeros dropped)."""
    moment = datetime.datetime.fromtimestamp(t, tz=datetime.UTC)
    fraction = f"{moment.microsecond:06d}000".rstrip("0")
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"


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


def plan_logs(query: Mapping[str, str], now: float) -> LogOptions:
    seconds = _positive(query, "sinceSeconds", 1)
    since_time = query.get("sinceTime")
    if seconds is not None and since_time:
        raise BadLogRequest("at most one of sinceTime or sinceSeconds may be specified")
    since = None if seconds is None else now - seconds
    if since_time:
        try:
            since = datetime.datetime.fromisoformat(since_time.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise BadLogRequest(
                f"sinceTime {since_time!r} is not an RFC 3339 time (e.g. 2024-05-01T10:00:00Z)"
            ) from None
    return LogOptions(
        follow=_flag(query.get("follow")),
        previous=_flag(query.get("previous")),
        tail_lines=_positive(query, "tailLines", 0),
        limit_bytes=_positive(query, "limitBytes", 1),
        timestamps=_flag(query.get("timestamps")),
        since=since,
    )


def stamp_lines(data: bytes, base: int, index: LogIndex, opts: LogOptions, now: float) -> bytes:
    """Lines of ``data`` (which starts at file offset ``base``) since ``opts.since``, each
    prefixed with its time when ``opts.timestamps``."""
    if not opts.timestamps and opts.since is None:
        return data
    out, offset = [], base
    for line in data.splitlines(keepends=True):
        seen = index.time_of(offset)
        seen = now if seen is None else seen
        offset += len(line)
        if opts.since is not None and seen < opts.since:
            continue
        out.append((rfc3339_nano(seen).encode() + b" " if opts.timestamps else b"") + line)
    return b"".join(out)


def select(
    data: bytes, start: int, end: int | None, opts: LogOptions,
    index: LogIndex | None = None, now: float = 0.0,
) -> bytes:  # fmt: skip
    """The bytes of one run (``data[start:end]``): since, stamped, tailed and limited."""
    out = stamp_lines(data[start:end], start, index or LogIndex(), opts, now)
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
    log_index: LogIndex


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
    opts = plan_logs(request.query, time.time())
    start, end = run_range(runner, opts, pod, container)
    try:
        data = runner.log_path.read_bytes()
    except FileNotFoundError:
        data = b""
    first = select(data, start, end, opts, runner.log_index, time.time())
    resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await resp.prepare(request)
    await resp.write(first)
    budget = None if opts.limit_bytes is None else opts.limit_bytes - len(first)
    offset = len(data)
    while opts.follow and not opts.previous and running() and budget != 0:
        await asyncio.sleep(POLL_S)  # tail -f: the log is a plain file
        raw = _read_from(runner.log_path, offset)
        chunk = stamp_lines(raw, offset, runner.log_index, opts, time.time())
        offset += len(raw)
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
