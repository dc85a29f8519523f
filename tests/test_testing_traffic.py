"""knemu.testing_traffic: the chaos tests' request loop, run for real with a stand-in curl."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

from knemu.cli.manifests import parse_documents
from knemu.testing_traffic import RequestResult, parse_request_log, request_loop, request_loop_pod

# Exits like curl would for the URL it is given (the last argument): refused for ".../down".
FAKE_CURL = """#!/bin/sh
for last; do :; done
case "$last" in
  */down) exit 7 ;;
  *) exit 0 ;;
esac
"""


def _run_loop(tmp_path: Path, target: str, count: int) -> str:
    curl = tmp_path / "curl"
    curl.write_text(FAKE_CURL)
    curl.chmod(curl.stat().st_mode | stat.S_IXUSR)
    env = dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    script = request_loop(target, count, interval_s=0.01)
    proc = subprocess.run(
        ["sh", "-c", script],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return proc.stdout


def test_the_loop_logs_one_dated_result_per_request(tmp_path: Path) -> None:
    started = time.time()
    up = parse_request_log(_run_loop(tmp_path, "http://svc:8080/", 3))
    down = parse_request_log(_run_loop(tmp_path, "http://svc:8080/down", 2))
    ended = time.time()
    assert [(r.ok, r.curl_exit) for r in up] == [(True, 0)] * 3
    assert [(r.ok, r.curl_exit) for r in down] == [(False, 7)] * 2
    times = [r.sent_at for r in up + down]
    assert times == sorted(times) and started - 1 <= times[0] and times[-1] <= ended + 1


def test_the_target_is_one_shell_word(tmp_path: Path) -> None:
    # A URL with shell metacharacters reaches curl as one argument, and nothing else runs.
    rows = parse_request_log(_run_loop(tmp_path, "http://svc/down;touch pwned&", 1))
    assert [(r.ok, r.curl_exit) for r in rows] == [(True, 0)]  # the URL does not end in /down
    assert not (tmp_path / "pwned").exists()  # the loop runs in tmp_path


def test_the_pod_is_pinned_bounded_and_applies_as_a_manifest() -> None:
    text = request_loop_pod("client", "node-1", "http://sample-clusterip:8080", 700)
    (doc,) = parse_documents(text, "-")
    pod = json.loads(text)
    assert doc.obj == pod and pod["metadata"] == {"name": "client"}
    assert pod["spec"]["nodeName"] == "node-1" and pod["spec"]["restartPolicy"] == "Never"
    (container,) = pod["spec"]["containers"]
    assert container["command"] == [
        "sh",
        "-c",
        request_loop("http://sample-clusterip:8080", 700),
    ]
    assert "seq 1 700" in container["command"][2] and "-m 2 " in container["command"][2]


def test_the_parser_skips_foreign_and_unfinished_lines() -> None:
    text = (
        "1700000000.25 ok\n"
        "curl: (7) Failed to connect\n"
        "1700000000.5 fail 28\n"
        "1700000001 ok extra\n"
        "1700000001.75 fa"  # the pod is still writing this one
    )
    assert parse_request_log(text) == [
        RequestResult(1700000000.25, True, 0),
        RequestResult(1700000000.5, False, 28),
    ]
    assert parse_request_log("") == [] and parse_request_log("1700000000.25 ok") == []
