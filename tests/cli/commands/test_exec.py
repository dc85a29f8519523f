"""`knemu exec` and `knemu logs` over a real loopback websocket (channel protocol)."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Iterator

import pytest

from knemu.cli import main
from knemu.cli.commands.exec import exit_code_of

from ..fake_exec_server import FakeExec, fake_exec_server


@pytest.fixture
def fake() -> Iterator[FakeExec]:
    with fake_exec_server() as state:
        yield state


def test_exec_streams_output_and_returns_exit_code(
    fake: FakeExec, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["exec", "--server", fake.url, "p1", "-c", "side", "--", "sh", "-c", "exit", "3"])
    out, err = capsys.readouterr()
    assert code == 3
    assert out == "sh -c exit 3\n"
    assert err == "warning\n"
    assert ("container", "side") in fake.queries[0]
    assert [v for k, v in fake.queries[0] if k == "command"] == ["sh", "-c", "exit", "3"]
    assert ("stdin", "0") in fake.queries[0] and ("stdout", "1") in fake.queries[0]


def test_exec_defaults_to_first_container_and_says_so(
    fake: FakeExec, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["exec", "--server", fake.url, "p1", "--", "true"]) == 0
    assert ("container", "main") in fake.queries[0]
    assert 'Defaulted container "main" out of: main, side' in capsys.readouterr().err


def test_exec_passes_stdin_and_closes_it(
    fake: FakeExec, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n"))
    assert main(["exec", "--server", fake.url, "-i", "p1", "-c", "main", "--", "cat"]) == 0
    assert fake.stdin_seen == [b"hello\n"]
    assert capsys.readouterr().out == "HELLO\ncat\n"


def test_exec_errors(fake: FakeExec, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["exec", "--server", fake.url, "nope", "--", "true"]) == 1
    assert capsys.readouterr().err == 'Error from server (NotFound): pods "nope" not found\n'
    assert main(["exec", "--server", fake.url, "p1", "-c", "bogus", "--", "true"]) == 1
    assert "container bogus is not valid for pod p1" in capsys.readouterr().err
    assert main(["exec", "--server", fake.url, "p1"]) == 1
    assert "knemu exec POD -- COMMAND" in capsys.readouterr().err


def test_logs(fake: FakeExec, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logs", "--server", fake.url, "p1", "-c", "side"]) == 0
    assert capsys.readouterr().out == "log of side\nline 2\n"


def test_exit_code_of_status() -> None:
    assert exit_code_of({"status": "Success"}) == 0
    failure = {"status": "Failure", "details": {"causes": [{"reason": "ExitCode", "message": "7"}]}}
    assert exit_code_of(failure) == 7
    with pytest.raises(Exception, match="exec failed: container not found"):
        exit_code_of({"status": "Failure", "message": "container not found"})


def test_run_attaches_streams_output_deletes_and_exits_with_the_code(
    fake: FakeExec, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "run",
        "--server",
        fake.url,
        "--image=amsy810/tools:v2.0",
        "--restart=Never",
        "--rm",
        "-i",
        "testpod",
        "--command",
        "--",
        "curl",
        "-s",
        "http://10.97.91.208:8080",
    ]
    assert main(argv) == 3
    out = capsys.readouterr().out
    assert out == 'log of testpod\nline 2\npod "testpod" deleted\n'
    assert fake.deleted == ["testpod"]
    spec = fake.created["testpod"]["spec"]
    assert spec["containers"][0]["command"] == ["curl", "-s", "http://10.97.91.208:8080"]
    assert spec["containers"][0]["stdin"] is True and spec["restartPolicy"] == "Never"


def test_run_that_stays_pending_says_why_and_still_cleans_up(
    fake: FakeExec, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.run_exit_code = None
    argv = [
        "run",
        "--server",
        fake.url,
        "--image=x",
        "--rm",
        "-i",
        "--pod-running-timeout",
        "0.2",
        "stuck",
        "--",
        "true",
    ]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert err == (
        'error: pod "stuck" did not start within 0.2s (phase Pending): '
        "Unschedulable: 0/0 nodes are available\n"
    )
    assert out == 'pod "stuck" deleted\n' and fake.deleted == ["stuck"]
    assert fake.created["stuck"]["spec"]["containers"][0]["args"] == ["true"]


def test_run_stops_following_a_log_that_outlives_its_container(
    fake: FakeExec, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.running_reads, fake.hang_follow = 1, True
    started = time.monotonic()
    argv = ["run", "--server", fake.url, "--image=x", "--rm", "-i", "slow", "--", "true"]
    assert main(argv) == 3
    assert capsys.readouterr().out == 'log of slow\nline 2\npod "slow" deleted\n'
    assert time.monotonic() - started < 15  # the fake's stream would stay open for 30 s


def test_logs_follow_ends_with_the_container(
    fake: FakeExec, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.hang_follow = True
    assert main(["run", "--server", fake.url, "--image=x", "tail"]) == 0
    fake.running_reads = fake.reads + 1
    assert main(["logs", "--server", fake.url, "-f", "tail"]) == 0
    assert capsys.readouterr().out == "pod/tail created\nlog of tail\nline 2\n"


def test_get_watch_prints_a_row_per_event(
    fake: FakeExec, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["get", "--server", fake.url, "svc", "-w", "--request-timeout", "5"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [r[0] for r in rows] == ["NAME", "first", "second", "first"]
    assert [r[4] for r in rows[1:]] == ["80/TCP", "81/TCP", "8080/TCP"]
    watch_query = dict(fake.queries[-1])
    assert watch_query == {"watch": "true", "resourceVersion": "41", "timeoutSeconds": "5"}
