"""`knemu port-forward` on a local cluster (`knemu up`, 2 nodes), run as a subprocess.

The test process (root namespace) connects to the forwarder's loopback ports with curl; the
forwarder reaches the api-server on the cluster's host-side bridge address, which relays to
the pod's node agent, which connects to the pod.  One cluster for the module; the fixture
checks that `knemu down` leaves nothing behind, and every forwarder is ended by its test.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from localcluster import LocalCluster, local_cluster, read_until

from knemu.testing import free_port

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(600)]

FROM = re.compile(r"From=(\S+)")
WEB = """apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    app: pf-web
spec:
  nodeSelector: {{kubernetes.io/hostname: {node}}}
  containers:
  - name: web
    image: nginx
    ports:
    - containerPort: 80
      name: http
"""
SERVICE = """apiVersion: v1
kind: Service
metadata:
  name: pf-svc
spec:
  selector:
    app: pf-web
  ports:
  - name: web
    port: 8081
    targetPort: http
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("knemu-state"), nodes=2) as c:
        c.apply(WEB.format(name="web", node="node-2") + "---\n" + SERVICE)
        c.apply(WEB.format(name="web-b", node="node-1"))
        c.wait_ready(2, selector="app=pf-web")
        yield c


@contextlib.contextmanager
def forwarder(c: LocalCluster, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """`knemu port-forward ARGS`; SIGTERM on exit if it still runs."""
    argv = [sys.executable, "-m", "knemu.cli", "port-forward", *args]
    proc = subprocess.Popen(argv, env=c.env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def curl(port: int, path: str = "/") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-s", "-m", "10", f"http://127.0.0.1:{port}{path}"],
                          capture_output=True, text=True, check=False, timeout=30)  # fmt: skip


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_pod_port_answers_from_that_pod_and_sigterm_closes_it(cluster: LocalCluster) -> None:
    port = free_port()
    with forwarder(cluster, "pod/web", f"{port}:80") as proc:
        read_until(proc, proc.stdout, rf"Forwarding from 127\.0\.0\.1:{port} -> 80\n")
        for _ in range(3):  # one websocket per connection, each answered
            out = curl(port)
            match = FROM.search(out.stdout)
            assert match and match.group(1) == "web", (out.stdout, out.stderr)
        assert "Welcome to nginx" in curl(port, "/index.html").stdout
        read_until(proc, proc.stdout, f"(Handling connection for {port}\n.*){{4}}")
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    assert not listening(port), "port-forward left its port listening after SIGTERM"


def test_service_picks_a_ready_pod_and_maps_to_its_target_port(cluster: LocalCluster) -> None:
    with forwarder(cluster, "svc/pf-svc", ":8081") as proc:
        said = read_until(proc, proc.stdout, r"Forwarding from 127\.0\.0\.1:\d+ -> 80\n")
        port = int(re.findall(r"127\.0\.0\.1:(\d+) -> 80", said)[0])
        match = FROM.search(curl(port).stdout)
        assert match and match.group(1) in ("web", "web-b")
    out = cluster.knemu("port-forward", "svc/pf-svc", "9999:8082", check=False)
    assert out.returncode == 1 and "does not have a service port 8082" in out.stderr


def test_a_closed_remote_port_is_reported_and_forwarding_goes_on(cluster: LocalCluster) -> None:
    good, closed = free_port(), free_port()
    with forwarder(cluster, "deploy/none", f"{good}:80") as proc:
        assert proc.wait(timeout=30) == 1  # not found: nothing to forward to
    with forwarder(cluster, "web-b", f"{good}:80", f"{closed}:81") as proc:
        read_until(proc, proc.stdout, rf"127\.0\.0\.1:{closed} -> 81\n")
        assert curl(closed).stdout == ""  # the connection is closed, with nothing sent
        err = read_until(proc, proc.stderr, "connection refused")
        want = f"error: an error occurred forwarding {closed} -> 81: error forwarding port 81 "
        assert want + "to pod default/web-b" in err, err
        match = FROM.search(curl(good).stdout)
        assert match and match.group(1) == "web-b"
        assert proc.poll() is None
