"""The real kubectl against the docker compose cluster, with the kubeconfig
``scripts/compose kubeconfig`` prints (as a user would): nodes, the seed Deployment with its
tables and rollout, exec and port-forward on each transport kubectl has, a DaemonSet on every
node.  One 2-node cluster for the module; kubectl runs on the host and reaches the api-server
container over the cluster's internal network."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from compose_helpers import ComposeCluster, compose_cluster, wait_until
from kubectl_driver import KUBECTL, Kubectl, curl, port_forward

pytestmark = [
    pytest.mark.compose,
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(KUBECTL is None, reason="kubectl is not on PATH (install it to run these)"),
]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SPDY = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[ComposeCluster]:
    with compose_cluster(nodes=2) as c:
        yield c


@pytest.fixture(scope="module")
def kubectl(cluster: ComposeCluster, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    home = tmp_path_factory.mktemp("kube")
    return Kubectl(cluster.kubeconfig(home / "kubeconfig"), home / "cache")


def test_nodes_and_the_seed_deployment(kubectl: Kubectl) -> None:
    nodes = kubectl("get", "nodes").stdout.splitlines()
    assert nodes[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert sorted(line.split()[1] for line in nodes[1:]) == ["Ready", "Ready"]
    kubectl("apply", "-f", str(EXAMPLES / "sample-deployment.yaml"),
            "-f", str(EXAMPLES / "sample-clusterip.yaml"))  # fmt: skip
    kubectl("rollout", "status", "deploy/sample-deployment", "--timeout", "150s", timeout_s=180)
    pods = kubectl("get", "pods", "-l", "app=sample-app", "-o", "wide").stdout.splitlines()
    assert pods[0].split()[:8] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE",
                                   "NOMINATED"]  # fmt: skip
    assert [line.split()[2] for line in pods[1:]] == ["Running"] * 3


@pytest.fixture(scope="module")
def web(kubectl: Kubectl) -> str:
    """A pod serving 3 MB of random bytes at /big (in its node container's /tmp); their
    sha256."""
    script = ("mkdir -p /tmp/pf && head -c 3000000 /dev/urandom > /tmp/pf/big && "
              "exec python3 -m http.server 80 -d /tmp/pf")  # fmt: skip
    kubectl("run", "pf-web", "--image=tools", "--port=80", "--command", "--", "sh", "-c", script)
    kubectl("wait", "--for=condition=Ready", "pod/pf-web", "--timeout=150s", timeout_s=180)
    probe = "import socket; socket.create_connection(('127.0.0.1', 80), 1)"
    wait_until(lambda: kubectl("exec", "pf-web", "--", "python3", "-c", probe).returncode == 0,
               60, what="pf-web listening")  # fmt: skip
    return kubectl("exec", "pf-web", "--", "sha256sum", "/tmp/pf/big").stdout.split()[0]


@pytest.mark.parametrize("transport", ["websocket", "spdy"])
def test_port_forward(kubectl: Kubectl, web: str, transport: str) -> None:
    with port_forward(kubectl, transport, "pod/pf-web", 80) as port:
        assert hashlib.sha256(curl(port, "/big")).hexdigest() == web
        assert b"big" in curl(port, "/")  # a second connection: a new stream pair


def test_exec_over_spdy(kubectl: Kubectl, web: str) -> None:
    out = kubectl("exec", "-i", "pf-web", "--", "sh", "-c", "wc -c; echo oops >&2",
                  input_text="x" * 100_000, env=SPDY)  # fmt: skip
    assert out.stdout.strip() == "100000" and out.stderr == "oops\n"
    assert kubectl("exec", "pf-web", "--", "sh", "-c", "exit 3", env=SPDY,
                   check=False).returncode == 3  # fmt: skip


def test_daemon_set_on_every_node(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", str(EXAMPLES / "sample-daemonset.yaml"))
    kubectl("rollout", "status", "ds/node-echo", "--timeout", "150s", timeout_s=180)
    nodes = kubectl("get", "pods", "-l", "app=node-echo", "-o",
                    "jsonpath={.items[*].spec.nodeName}").stdout.split()  # fmt: skip
    assert sorted(nodes) == ["node-1", "node-2"]
    row = kubectl("get", "ds", "node-echo").stdout.splitlines()[1].split()
    assert row[1:6] == ["2", "2", "2", "2", "2"]
