"""`knemu run -i` and `knemu attach` with real stdin on a local cluster (`knemu up`, 2 nodes).

Pods run real commands (cat, wc, sh) whose stdin is the pipe the node agent holds; the CLI
runs as a subprocess with its stdin fed by the test.  One cluster for the module; every pod a
test makes is deleted by it, and the fixture checks that `knemu down` leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from localcluster import LocalCluster, local_cluster, read_until

from knemu.testing import wait_until

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(600)]

STDIN_POD = """apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: tools
    command: ["sh", "-c", {script}]
    stdin: {stdin}
    stdinOnce: {once}
"""


def stdin_pod(name: str, script: str, stdin: bool = True, once: bool = False) -> str:
    flag = {True: "true", False: "false"}
    return STDIN_POD.format(name=name, script=json.dumps(script), stdin=flag[stdin],
                            once=flag[once])  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("knemu-state"), nodes=2) as c:
        yield c


def pod_names(c: LocalCluster) -> set[str]:
    return {p["metadata"]["name"] for p in c.pods()}


def run_i(
    c: LocalCluster, name: str, stdin: str, *command: str
) -> subprocess.CompletedProcess[str]:
    return c.knemu("run", name, "--image=tools", "--restart=Never", "--rm", "-i", "--command",
                   "--", *command, input_text=stdin, check=False)  # fmt: skip


def wait_running(c: LocalCluster, name: str) -> None:
    def running() -> bool:
        return (
            name in pod_names(c)
            and c.get(f"/api/v1/namespaces/default/pods/{name}")["status"].get("phase") == "Running"
        )

    wait_until(running, 60, what=f"pod {name} Running", interval_s=0.1)


def delete(c: LocalCluster, name: str) -> None:
    c.knemu("delete", "pod", name, check=False)
    wait_until(lambda: name not in pod_names(c), 60, what=f"pod {name} gone", interval_s=0.1)


def test_run_i_gives_cat_our_stdin_and_removes_the_pod(cluster: LocalCluster) -> None:
    out = run_i(cluster, "cat1", "hello\n", "cat")
    assert (out.returncode, out.stdout) == (0, 'hello\npod "cat1" deleted\n'), out.stderr
    wait_until(
        lambda: "cat1" not in pod_names(cluster), 60, what="pod cat1 gone (--rm)", interval_s=0.1
    )


def test_run_i_wc_counts_piped_lines(cluster: LocalCluster) -> None:
    out = run_i(cluster, "wc1", "a\nb\n", "wc", "-l")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["2", 'pod "wc1" deleted']
    wait_until(
        lambda: "wc1" not in pod_names(cluster), 60, what="pod wc1 gone (--rm)", interval_s=0.1
    )


def test_run_i_with_empty_stdin_sees_eof_and_returns_the_exit_code(cluster: LocalCluster) -> None:
    out = run_i(cluster, "eof1", "", "sh", "-c", "cat; echo eof; exit 7")
    assert (out.returncode, out.stdout) == (7, 'eof\npod "eof1" deleted\n'), out.stderr


def test_run_i_output_of_a_quick_command_is_complete(cluster: LocalCluster) -> None:
    """The seed's shape: the command ignores stdin and may end before the attach."""
    out = run_i(cluster, "quick1", "", "sh", "-c", "seq 1 500; exit 3")
    assert out.returncode == 3, out.stderr
    assert out.stdout.splitlines() == [str(i) for i in range(1, 501)] + ['pod "quick1" deleted']


def test_attach_i_answers_a_reading_container(cluster: LocalCluster) -> None:
    cluster.apply(stdin_pod("reader", "read x; echo got $x"))
    try:
        wait_running(cluster, "reader")
        out = cluster.knemu("attach", "-i", "reader", input_text="hi there\n", check=False)
        assert (out.returncode, out.stdout) == (0, "got hi there\n"), out.stderr
    finally:
        delete(cluster, "reader")


def test_attach_i_without_stdin_in_the_spec_is_refused(cluster: LocalCluster) -> None:
    cluster.apply(stdin_pod("nostdin", "sleep 3600", stdin=False))
    try:
        wait_running(cluster, "nostdin")
        out = cluster.knemu("attach", "-i", "nostdin", input_text="x\n", check=False)
        assert out.returncode == 1
        assert "was not created with stdin: true" in out.stderr, out.stderr
        node = cluster.get("/api/v1/namespaces/default/pods/nostdin")["spec"]["nodeName"]
        # The node agent refuses it too (reached through the node proxy, without upgrade).
        url = f"/api/v1/nodes/{node}/proxy/attach/default/nostdin/main"
        with pytest.raises(urllib.error.HTTPError) as refused:
            cluster.open(url + "?stdin=true&stdout=true")
        body = json.loads(refused.value.read())
        assert refused.value.code == 400 and "stdin is /dev/null" in body["message"]
    finally:
        delete(cluster, "nostdin")


def test_stdin_stays_open_across_sessions_without_stdin_once(cluster: LocalCluster) -> None:
    """Without stdinOnce the process never sees EOF: a second session can still write."""
    script = "while read x; do echo got $x; done; echo eof"
    cluster.apply(stdin_pod("keeper", script))
    try:
        wait_running(cluster, "keeper")
        for word in ("one", "two"):
            with attach_process(cluster, "keeper") as proc:
                assert proc.stdin is not None
                proc.stdin.write(f"{word}\n".encode())
                proc.stdin.close()  # our EOF: the container's stdin stays open
                assert read_until(proc, proc.stdout, f"got {word}\n", 30).endswith("\n")
                assert proc.poll() is None  # still attached: the container did not end
        phase = cluster.get("/api/v1/namespaces/default/pods/keeper")["status"]["phase"]
        assert phase == "Running"
    finally:
        delete(cluster, "keeper")


def test_stdin_once_closes_after_the_first_session(cluster: LocalCluster) -> None:
    script = "while read x; do echo got $x; done; echo eof"
    cluster.apply(stdin_pod("once", script, once=True))
    try:
        wait_running(cluster, "once")
        out = cluster.knemu("attach", "-i", "once", input_text="a\nb\n", check=False)
        assert (out.returncode, out.stdout) == (0, "got a\ngot b\neof\n"), out.stderr
    finally:
        delete(cluster, "once")


# -- a CLI attach session driven line by line --------------------------------------------------


@contextlib.contextmanager
def attach_process(c: LocalCluster, pod: str) -> Iterator[subprocess.Popen[bytes]]:
    """`knemu attach -i POD` with pipes; Ctrl-C (SIGINT) on exit: the session ends, not the pod."""
    argv = [sys.executable, "-m", "knemu.cli", "attach", "-i", pod]
    proc = subprocess.Popen(argv, env=c.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
