"""Test helpers for traffic under chaos: a client pod that requests a URL in a bounded loop.

``request_loop_pod(name, node, target, count)`` is the manifest of a pod pinned to ``node`` that
curls ``target`` every 0.1 s, ``count`` times, and logs one line per request:
``<epoch when sent> ok`` or ``<epoch when sent> fail <curl exit code>``.  ``parse_request_log``
reads those lines back, from ``knemu logs`` or from the pod's log file on its node.  The chaos
tests of the local cluster (tests/localcluster.py) and of docker compose (tests/compose) share them,
so both measure an outage the same way.  The loop is bounded in count and each request in time,
and the pod only talks to ``target`` inside the cluster.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import NamedTuple

TOOLS_IMAGE = "amsy810/tools:v2.0"  # knemu's tools workload: sh, curl, date, seq
INTERVAL_S = 0.1
REQUEST_TIMEOUT_S = 2.0  # a busy CI machine answers within this; a SYN to a dead node does not

# One complete log line of the loop: epoch seconds, then "ok" or "fail <curl exit code>".
_LINE = re.compile(r"(\d+(?:\.\d+)?) (?:(ok)|fail (\d+))")


class RequestResult(NamedTuple):
    sent_at: float  # epoch seconds when the request was sent
    ok: bool
    curl_exit: int  # 0 when ok; otherwise curl's exit code (7 refused, 28 timed out, ...)


def request_loop(
    target: str,
    count: int,
    *,
    interval_s: float = INTERVAL_S,
    timeout_s: float = REQUEST_TIMEOUT_S,
) -> str:
    """The ``sh -c`` script: ``count`` requests to ``target``, one result line each.

    A request is dated when it is sent, so a failure is placed where the outage began, not
    ``timeout_s`` later.
    """
    return (
        f"for i in $(seq 1 {count}); do s=$(date +%s.%N); "
        f"curl -s -m {timeout_s:g} -o /dev/null {shlex.quote(target)}; rc=$?; "
        'if [ $rc -eq 0 ]; then echo "$s ok"; else echo "$s fail $rc"; fi; '
        f"sleep {interval_s:g}; done"
    )


def request_loop_pod(
    name: str,
    node: str,
    target: str,
    count: int,
    *,
    interval_s: float = INTERVAL_S,
    timeout_s: float = REQUEST_TIMEOUT_S,
    image: str = TOOLS_IMAGE,
) -> str:
    """The manifest of a pod pinned to ``node`` running ``request_loop`` once (restartPolicy
    Never: it ends after ``count`` requests).  JSON, which ``knemu apply -f -`` reads as it
    reads YAML."""
    script = request_loop(target, count, interval_s=interval_s, timeout_s=timeout_s)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "containers": [{"name": "client", "image": image, "command": ["sh", "-c", script]}],
        },
    }
    return json.dumps(pod, indent=2) + "\n"


def parse_request_log(text: str) -> list[RequestResult]:
    """The results logged by ``request_loop``, in order.  Other lines are skipped, and so is
    a last line without its newline (a log file read while the pod is writing it)."""
    lines = text.split("\n")[:-1]  # the part after the last newline is not a complete line
    rows = []
    for line in lines:
        match = _LINE.fullmatch(line.strip())
        if match is None:
            continue
        sent_at, ok, code = match.groups()
        rows.append(RequestResult(float(sent_at), ok is not None, int(code or 0)))
    return rows
