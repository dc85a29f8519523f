"""`knemu attach` and `knemu run -i` over attach, against the loopback fake api-server."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from knemu.cli import main

from ..fake_exec_server import FakeExec, fake_exec_server


@pytest.fixture
def fake() -> Iterator[FakeExec]:
    with fake_exec_server() as state:
        yield state


def stdin_pod(name: str) -> dict[str, Any]:
    containers = [{"name": "sh", "image": "tools", "stdin": True}, {"name": "quiet", "image": "x"}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "7"},
        "spec": {"nodeName": "node-1", "containers": containers},
    }


def test_attach_i_passes_stdin_and_returns_the_exit_code(
    fake: FakeExec, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.created["shell"], fake.running_reads, fake.attach_exit_code = stdin_pod("shell"), 9, 4
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n"))
    assert main(["attach", "--server", fake.url, "-i", "shell", "-c", "sh"]) == 4
    assert capsys.readouterr().out == "attached\nHELLO\n"
    assert fake.stdin_seen == [b"hello\n"]
    query = dict(fake.queries[-1])
    assert query == {"container": "sh", "stdin": "true", "stdout": "true", "stderr": "true"}


def test_attach_without_i_only_watches(fake: FakeExec, capsys: pytest.CaptureFixture[str]) -> None:
    fake.created["shell"], fake.running_reads, fake.attach_exit_code = stdin_pod("shell"), 9, 0
    assert main(["attach", "--server", fake.url, "shell", "-c", "quiet"]) == 0
    assert capsys.readouterr().out == "attached\n"
    assert dict(fake.queries[-1])["stdin"] == "false" and fake.stdin_seen == []


def test_attach_refusals_say_why(fake: FakeExec, capsys: pytest.CaptureFixture[str]) -> None:
    fake.created["shell"], fake.running_reads, fake.attach_exit_code = stdin_pod("shell"), 1, 0
    assert main(["attach", "--server", fake.url, "-i", "shell", "-c", "quiet"]) == 1
    err = capsys.readouterr().err
    assert 'container "quiet" of pod "shell": it was not created with stdin: true' in err
    assert main(["attach", "--server", fake.url, "shell", "-c", "sh"]) == 1  # now Failed
    err = capsys.readouterr().err
    assert err == "error: cannot attach a container in a completed pod; current phase is Failed\n"
    assert fake.queries == []  # refused before any session was opened


def test_run_i_attaches_from_the_start_and_removes_the_pod(
    fake: FakeExec, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.running_reads, fake.attach_exit_code = 1, 6
    monkeypatch.setattr(sys, "stdin", io.StringIO("a\nb\n"))
    argv = ["run", "--server", fake.url, "--image=x", "--rm", "-i", "wc", "--command", "--", "wc"]
    assert main(argv) == 6
    assert capsys.readouterr().out == 'attached\nA\nB\npod "wc" deleted\n'
    query = dict(fake.queries[-1])
    assert query["fromStart"] == "true" and query["stdin"] == "true"
    assert fake.deleted == ["wc"]
    container = fake.created["wc"]["spec"]["containers"][0]
    assert (container["stdin"], container["stdinOnce"]) == (True, True)


def test_run_i_with_a_closed_stdin_sends_eof(
    fake: FakeExec, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.running_reads, fake.attach_exit_code = 1, 0
    monkeypatch.setattr(sys, "stdin", None)  # what Python makes of a closed descriptor 0
    assert main(["run", "--server", fake.url, "--image=x", "--rm", "-i", "cat", "--", "cat"]) == 0
    assert fake.stdin_seen == [b""]
    assert capsys.readouterr().out == 'attached\npod "cat" deleted\n'


def test_run_i_falls_back_to_logs_when_attach_is_refused(
    fake: FakeExec, capsys: pytest.CaptureFixture[str]
) -> None:
    """An older server without attach, or a container that ended first: logs have it all."""
    fake.running_reads = 1  # attach_exit_code None: the fake answers attach with 404
    argv = ["run", "--server", fake.url, "--image=x", "--rm", "-i", "gone", "--", "true"]
    assert main(argv) == 3
    assert capsys.readouterr().out == 'log of gone\nline 2\npod "gone" deleted\n'
