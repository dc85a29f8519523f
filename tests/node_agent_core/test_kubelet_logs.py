"""PodLogOptions on the kubelet side: parsing, runs, tail and limit."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from knemu.node_agent.kubelet_logs import BadLogRequest, LogOptions, plan_logs, run_range, select


def test_plan_logs() -> None:
    assert plan_logs({}) == LogOptions()
    opts = plan_logs({"follow": "true", "previous": "1", "tailLines": "3", "limitBytes": "9"})
    assert opts == LogOptions(follow=True, previous=True, tail_lines=3, limit_bytes=9)
    assert plan_logs({"timestamps": "false"}) == LogOptions()


@pytest.mark.parametrize(
    ("query", "message"),
    [({"tailLines": "x"}, "tailLines must be a whole number"),
     ({"tailLines": "-1"}, "must be >= 0"),
     ({"limitBytes": "0"}, "limitBytes: Invalid value: 0"),
     ({"sinceSeconds": "10"}, "sinceSeconds is not supported"),
     ({"sinceTime": "2024-01-01T00:00:00Z"}, "sinceTime is not supported")],
)  # fmt: skip
def test_bad_options_are_named(query: dict[str, str], message: str) -> None:
    with pytest.raises(BadLogRequest, match=message):
        plan_logs(query)


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
