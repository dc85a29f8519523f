"""Real images on the compose cluster: the offline test image loaded into the node containers
with `knemu image load`, a Deployment spread over both nodes, Service traffic to the real
containers, and exec isolation of real and built-in containers (runc and the built-ins' own
namespaces inside a node container).  Internal networks only; images are built locally.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from compose_helpers import ROOT, ComposeCluster, compose_cluster, wait_until

from knemu.testing_images import WEB_REF, build_test_images

pytestmark = [pytest.mark.compose, pytest.mark.slow, pytest.mark.timeout(900)]

WEB = f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: {WEB_REF}
        imagePullPolicy: Never
        ports: [{{containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  containers:
  - {{name: tools, image: "amsy810/tools:v2.0", command: ["sleep", "100000"]}}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeCluster]:
    archive = build_test_images(tmp_path_factory.mktemp("images"))[WEB_REF]
    with compose_cluster(nodes=2) as c:
        _load(c, archive)
        yield c


def _load(c: ComposeCluster, archive: Path) -> None:
    """`knemu image load -i` from this host, as a user of a compose cluster runs it."""
    env = dict(os.environ, KNEMU_SERVER=c.server, PYTHONPATH=str(ROOT / "src"))
    out = subprocess.run(
        [sys.executable, "-m", "knemu.cli", "image", "--runtime", "docker", "--project",
         c.project, "load", "-i", str(archive)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("loaded") == 2, out.stdout  # one image, two nodes


def _exec(c: ComposeCluster, pod: str, *argv: str) -> str:
    return c.knemu("exec", pod, "--", *argv)


def test_deployment_of_a_real_image_serves_through_a_service(cluster: ComposeCluster) -> None:
    c = cluster
    c.knemu("apply", "-f", "-", stdin=WEB)

    def ready() -> list[dict[str, object]]:
        pods = c.rest("/api/v1/namespaces/default/pods?labelSelector=app%3Dweb")["items"]
        ok = [p for p in pods if p["status"].get("containerStatuses", [{}])[0].get("ready")]
        return ok if len(ok) == 2 else []

    pods = wait_until(ready, 180, "2 ready web pods")
    assert {p["spec"]["nodeName"] for p in pods} == {"node-1", "node-2"}  # spread
    names = {p["metadata"]["name"] for p in pods}
    wait_until(
        lambda: "running" in c.rest("/api/v1/namespaces/default/pods/client")["status"]
        ["containerStatuses"][0]["state"], 120, "the client pod",
    )  # fmt: skip
    seen: set[str] = set()

    def both_answer() -> bool:
        out = c.knemu("exec", "client", "--", "curl", "-s", "-m", "3", "http://web/", check=False)
        seen.update(line.split()[1] for line in out.splitlines() if line.startswith("web "))
        return seen == names

    wait_until(both_answer, 90, f"answers from {names} across both nodes")


def test_exec_isolation_of_real_and_builtin_containers(cluster: ComposeCluster) -> None:
    c = cluster
    pod = next(
        p["metadata"]["name"]
        for p in c.rest("/api/v1/namespaces/default/pods?labelSelector=app%3Dweb")["items"]
    )
    rows = [line.split(None, 1) for line in _exec(c, pod, "ps", "-o", "pid,args").splitlines()]
    assert rows[1][0] == "1" and "httpd" in rows[1][1], rows  # the image's process is PID 1
    assert not any("knemu" in r[1] for r in rows[1:]), rows
    assert 'NAME="knemu test image"' in _exec(c, pod, "cat", "/etc/os-release")
    assert _exec(c, pod, "hostname").strip() == pod
    # The built-in tools pod: its own PID namespace, no privileges, inside a node container.
    status = _exec(c, "client", "cat", "/proc/self/status")
    assert "Uid:\t65534" in status and "CapEff:\t0000000000000000" in status, status
    procs = _exec(c, "client", "ps", "-e", "-o", "args=").splitlines()
    assert "sleep 100000" in procs and not any("knemu" in p for p in procs), procs
