"""PodLogOptions on the kubelet side: parsing, runs, tail and limit."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from knemu.node_agent.kubelet.logs import (
    BadLogRequest,
    LogOptions,
    plan_logs,
    rfc3339_nano,
    run_range,
    select,
)
from knemu.node_agent.runtime.log_index import LogIndex

NOW = 1_700_000_000.0


def test_plan_logs() -> None:
    assert plan_logs({}, NOW) == LogOptions()
    query = {"follow": "true", "previous": "1", "tailLines": "3", "limitBytes": "9"}
    opts = plan_logs(query, NOW)
    assert opts == LogOptions(follow=True, previous=True, tail_lines=3, limit_bytes=9)
    assert plan_logs({"timestamps": "false"}, NOW) == LogOptions()
    assert plan_logs({"sinceSeconds": "10"}, NOW).since == NOW - 10
    assert plan_logs({"sinceTime": "2023-11-14T22:13:20Z"}, NOW).since == NOW


@pytest.mark.parametrize(
    ("query", "message"),
    [({"tailLines": "x"}, "tailLines must be a whole number"),
     ({"tailLines": "-1"}, "must be >= 0"),
     ({"limitBytes": "0"}, "limitBytes: Invalid value: 0"),
     ({"sinceSeconds": "0"}, "sinceSeconds: Invalid value: 0"),
     ({"sinceSeconds": "5", "sinceTime": "2024-01-01T00:00:00Z"}, "at most one of"),
     ({"sinceTime": "yesterday"}, "is not an RFC 3339 time")],
)  # fmt: skip
def test_bad_options_are_named(query: dict[str, str], message: str) -> None:
    with pytest.raises(BadLogRequest, match=message):
        plan_logs(query, NOW)


def test_select_tail_then_limit() -> None:
    data = b"old\nnew1\nnew2\nnew3\n"
    assert select(data, 4, None, LogOptions()) == b"new1\nnew2\nnew3\n"
    assert select(data, 4, None, LogOptions(tail_lines=1)) == b"new3\n"
    assert select(data, 4, None, LogOptions(tail_lines=2, limit_bytes=3)) == b"new"
    assert select(data, 0, 4, LogOptions()) == b"old\n"


def test_previous_run_or_kubelets_error() -> None:
    first_run = SimpleNamespace(log_path=Path("/x"), log_start=0, previous_start=None)
    assert run_range(first_run, LogOptions(), "p", "c") == (0, None)
    with pytest.raises(BadLogRequest, match='previous terminated container "c" in pod "p"'):
        run_range(first_run, LogOptions(previous=True), "p", "c")
    restarted = SimpleNamespace(log_path=Path("/x"), log_start=10, previous_start=4)
    assert run_range(restarted, LogOptions(previous=True), "p", "c") == (4, 10)


def test_line_times_since_and_timestamps() -> None:
    index = LogIndex()
    index.observe(4, NOW)  # "old\n" first seen at NOW
    index.observe(4, NOW + 1)  # no growth: nothing recorded
    index.observe(9, NOW + 2)  # "new1\n"
    data = b"old\nnew1\n"
    assert index.time_of(0) == NOW and index.time_of(6) == NOW + 2
    since = select(data, 0, None, LogOptions(since=NOW + 1), index, NOW + 3)
    assert since == b"new1\n"
    stamped = select(data, 0, None, LogOptions(timestamps=True, tail_lines=1), index, NOW + 3)
    assert stamped == b"2023-11-14T22:13:22Z new1\n"
    assert rfc3339_nano(NOW + 0.25) == "2023-11-14T22:13:20.25Z"
