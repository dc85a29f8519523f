"""The real kubectl against a local cluster: kubeconfig, apply with validation, explain,
server-side tables, ``get all``, port-forward, exec and attach on each transport kubectl has.

kubectl runs as a subprocess with the kubeconfig ``knemu up`` wrote (in the test's temporary
directory, never ~/.kube/config) and its own discovery cache.  Skips only when kubectl is not
on PATH (CI has it, so there the suite runs).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubectl_driver import KUBECTL, WEBSOCKETS, Kubectl, curl, port_forward
from localcluster import REPO, LocalCluster, local_cluster, read_until

from knemu import pki
from knemu.testing import free_port, wait_until, write_kubeconfig

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(KUBECTL is None, reason="kubectl is not on PATH (install it to run these)"),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("knemu-state"), nodes=2) as c:
        yield c


@pytest.fixture(scope="module")
def kubectl(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    return Kubectl(cluster.kubeconfig, tmp_path_factory.mktemp("kube-cache"))


def _header(out: str) -> list[str]:
    return out.splitlines()[0].split()


def test_up_wrote_a_kubeconfig_kubectl_uses_right_away(
    cluster: LocalCluster, kubectl: Kubectl
) -> None:
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    assert config["current-context"] == f"knemu-{cluster.name}"
    assert config["clusters"][0]["cluster"]["server"] == cluster.server
    out = kubectl("get", "nodes").stdout
    assert _header(out) == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert sorted(line.split()[1] for line in out.splitlines()[1:]) == ["Ready", "Ready"]


def test_apply_the_seed_deployment_then_tables(cluster: LocalCluster, kubectl: Kubectl) -> None:
    kubectl("apply", "-f", str(REPO / "examples/sample-deployment.yaml"),
            "-f", str(REPO / "examples/sample-clusterip.yaml"))  # fmt: skip
    cluster.wait_ready(3, selector="app=sample-app")
    pods = kubectl("get", "pods", "-l", "app=sample-app", "-o", "wide").stdout
    assert _header(pods)[:6] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP"]
    rows = [line.split() for line in pods.splitlines()[1:]]
    assert len(rows) == 3 and all(r[1] == "1/1" and r[2] == "Running" for r in rows)
    assert all(r[5].startswith("10.244.") and r[6].startswith("node-") for r in rows)
    svc = kubectl("get", "svc", "sample-clusterip").stdout
    assert _header(svc)[:5] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)"]
    assert "8080/TCP" in svc
    labels = kubectl("get", "deploy", "-A", "--show-labels").stdout
    assert _header(labels)[0] == "NAMESPACE" and _header(labels)[-1] == "LABELS"
    everything = kubectl("get", "all").stdout
    for kind in ("pod/", "service/sample-clusterip", "deployment.apps/sample-deployment",
                 "replicaset.apps/sample-deployment-"):  # fmt: skip
        assert kind in everything, everything


def test_client_side_validation_reports_unknown_and_mistyped_fields(kubectl: Kubectl) -> None:
    manifest = """apiVersion: apps/v1
kind: Deployment
metadata: {name: bad}
spec:
  replicas: "three"
  selector: {matchLabels: {app: bad}}
  template:
    metadata: {labels: {app: bad}}
    spec:
      containers:
      - {name: c, image: nginx, imagePort: 80}
"""
    proc = kubectl("apply", "-f", "-", input_text=manifest, check=False)
    assert proc.returncode == 1
    assert 'unknown field "imagePort" in io.k8s.api.core.v1.Container' in proc.stderr
    assert "ValidationError(Deployment.spec.replicas): invalid type" in proc.stderr
    assert "bad" not in kubectl("get", "deploy", "-o", "name").stdout


def test_explain_fields_and_recursive(kubectl: Kubectl) -> None:
    out = kubectl("explain", "deployment.spec.strategy").stdout
    assert "rollingUpdate" in out and "Recreate, RollingUpdate" in out
    rec = kubectl("explain", "pods.spec.containers", "--recursive").stdout
    assert "containerPort" in rec and "readinessProbe" in rec
    svc = kubectl("explain", "service.spec.type").stdout
    assert "How the Service is exposed" in svc


def test_apply_changes_merge_strategically(cluster: LocalCluster, kubectl: Kubectl) -> None:
    manifest = (REPO / "examples/sample-deployment.yaml").read_text()
    kubectl("apply", "-f", "-", input_text=manifest.replace("replicas: 3", "replicas: 2"))
    replicas = kubectl("get", "deploy", "sample-deployment", "-o",
                       "jsonpath={.spec.replicas}").stdout  # fmt: skip
    assert replicas == "2"


def test_config_maps_secrets_service_accounts_and_leases(kubectl: Kubectl) -> None:
    kubectl("create", "configmap", "cfg", "--from-literal=a=1", "--from-literal=b=2")
    kubectl("create", "secret", "generic", "sec", "--from-literal=pw=hunter2")
    out = kubectl("get", "cm,secret").stdout
    assert "configmap/cfg" in out and "secret/sec" in out and "Opaque" in out
    pw = kubectl("get", "secret", "sec", "-o", "jsonpath={.data.pw}").stdout
    assert pw == "aHVudGVyMg=="  # base64 of hunter2
    bad = kubectl("apply", "-f", "-", check=False, input_text=(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad}\ndata: {'a b': x}\n"))  # fmt: skip
    assert bad.returncode == 1 and "a valid config key must consist of" in bad.stderr
    assert "default" in kubectl("get", "serviceaccount", "default", "-o", "name").stdout
    leases = kubectl("get", "lease", "-n", "kube-node-lease").stdout
    assert _header(leases) == ["NAME", "HOLDER", "AGE"] and "node-1" in leases
    assert "HolderIdentity:  node-1" in kubectl("describe", "node", "node-1").stdout


def test_auth_can_i_and_whoami(kubectl: Kubectl) -> None:
    assert kubectl("auth", "can-i", "delete", "pods").stdout.strip() == "yes"
    whoami = kubectl("auth", "whoami").stdout
    assert "kubernetes-admin" in whoami and "system:masters" in whoami
    assert "*.*" in kubectl("auth", "can-i", "--list").stdout


def test_a_viewer_is_held_to_its_role_and_bad_credentials_get_401(
    cluster: LocalCluster, kubectl: Kubectl, tmp_path: Path
) -> None:
    """A user with a certificate from the cluster CA (as an admin issues one) and a view
    RoleBinding: kubectl answers for it exactly what RBAC allows."""
    data = cluster.state_root / f"cluster-{cluster.name}" / "apiserver-data"
    ca = pki.Issued(*((data / "pki" / f"ca.{ext}").read_bytes() for ext in ("crt", "key")))
    cert = pki.issue(ca, "jane", ["qa"])
    jane = pki.Credentials(cluster.server, ca.cert_pem, cert.cert_pem, cert.key_pem)
    as_jane = Kubectl(write_kubeconfig(jane, tmp_path / "jane"), kubectl.cache)
    denied = as_jane("get", "pods", check=False)
    assert denied.returncode == 1 and 'User "jane" cannot list resource "pods"' in denied.stderr
    kubectl("apply", "-f", "-", input_text=JANE_VIEW)
    try:
        as_jane("get", "pods")
        assert as_jane("auth", "can-i", "list", "pods", check=False).stdout.strip() == "yes"
        assert as_jane("auth", "can-i", "delete", "pods", check=False).stdout.strip() == "no"
        assert as_jane("auth", "can-i", "get", "secrets", check=False).stdout.strip() == "no"
        assert "Forbidden" in as_jane("get", "secrets", check=False).stderr
        assert "jane" in as_jane("auth", "whoami").stdout
        impersonated = kubectl("get", "pods", "--as=jane", check=False)
        assert impersonated.returncode == 1 and "impersonation" in impersonated.stderr
    finally:
        kubectl("delete", "rolebinding", "jane-view")
    nobody = pki.Credentials(cluster.server, ca.cert_pem, token="not-a-token-of-this-cluster")
    as_nobody = Kubectl(write_kubeconfig(nobody, tmp_path / "no"), kubectl.cache)
    refused = as_nobody("get", "pods", check=False)
    assert refused.returncode == 1 and "Unauthorized" in refused.stderr


JANE_VIEW = """apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: jane-view
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: jane}
"""


def test_top_shows_real_usage(cluster: LocalCluster, kubectl: Kubectl) -> None:
    ready = cluster.wait_ready(2, selector="app=sample-app")  # 2: scaled down by apply above
    nodes = kubectl("top", "nodes").stdout.splitlines()
    assert _header("\n".join(nodes))[:3] == ["NAME", "CPU(cores)", "CPU%"]
    memory = {line.split()[0]: line.split()[3] for line in nodes[1:]}
    assert set(memory) == {"node-1", "node-2"}
    assert all(m.endswith("Mi") and int(m[:-2]) > 10 for m in memory.values()), memory
    pods = kubectl("top", "pods", "-l", "app=sample-app").stdout.splitlines()
    assert len(pods) == 1 + len(ready)  # each with its process's real memory
    assert all(int(line.split()[2].removesuffix("Mi")) > 0 for line in pods[1:])


def test_rollout_history_and_undo(cluster: LocalCluster, kubectl: Kubectl) -> None:
    kubectl("create", "deployment", "undo", "--image=nginx:1.16", "--replicas=1")
    for image in ("nginx:1.17", "nginx:1.18"):
        kubectl("set", "image", "deploy/undo", f"nginx={image}")
        kubectl("rollout", "status", "deploy/undo", "--timeout=60s", timeout_s=90)
    detail = kubectl("rollout", "history", "deploy/undo", "--revision", "2").stdout
    assert "nginx:1.17" in detail
    kubectl("rollout", "undo", "deploy/undo")  # back to revision 2, which becomes 4
    kubectl("rollout", "status", "deploy/undo", "--timeout=60s", timeout_s=90)
    revisions = kubectl("rollout", "history", "deploy/undo").stdout.split()
    assert [r for r in revisions if r.isdigit()] == ["1", "3", "4"]
    kubectl("rollout", "undo", "deploy/undo", "--to-revision", "1")
    image = kubectl(
        "get",
        "deploy",
        "undo",
        "-o",
        "jsonpath={.spec.template.spec.containers[0]"
        ".image} {.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
    )
    assert image.stdout == "nginx:1.16 5"
    missing = kubectl("rollout", "undo", "deploy/undo", "--to-revision", "9", check=False)
    assert missing.returncode == 1 and "unable to find specified revision 9" in missing.stderr


def test_logs_options(cluster: LocalCluster, kubectl: Kubectl) -> None:
    kubectl("run", "logger", "--image=tools", "--restart=Never", "--command", "--",
            "sh", "-c", "for i in 1 2 3 4 5; do echo line$i; done; sleep 3600")  # fmt: skip
    cluster.wait_ready(1, selector="run=logger")
    wait_until(lambda: "line5" in kubectl("logs", "logger").stdout, 30, what="the pod's output")
    assert kubectl("logs", "logger", "--tail", "2").stdout == "line4\nline5\n"
    assert kubectl("logs", "logger", "--limit-bytes", "3").stdout == "lin"
    previous = kubectl("logs", "logger", "-p", check=False)
    assert previous.returncode == 1
    assert 'previous terminated container "logger" in pod "logger" not found' in previous.stderr
    stamped = kubectl("logs", "logger", "--timestamps", "--tail", "1").stdout
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z line5\n", stamped), stamped
    assert kubectl("logs", "logger", "--since", "1h").stdout.endswith("line5\n")
    assert kubectl("logs", "logger", "--since-time", "2999-01-01T00:00:00Z").stdout == ""


def test_server_side_apply_conflicts_force_and_removal(kubectl: Kubectl) -> None:
    def manifest(replicas: int, labels: str) -> str:
        return f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: ssa
  labels: {{{labels}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: ssa}}}}
  template:
    metadata: {{labels: {{app: ssa}}}}
    spec:
      containers: [{{name: web, image: nginx}}]
"""

    kubectl("apply", "--server-side", "--field-manager", "alice", "-f", "-",
            input_text=manifest(1, "app: ssa, team: a"))  # fmt: skip
    clash = kubectl("apply", "--server-side", "--field-manager", "bob", "-f", "-", check=False,
                    input_text=manifest(3, "app: ssa, team: a"))  # fmt: skip
    assert clash.returncode == 1
    assert 'conflict with "alice"' in clash.stderr and ".spec.replicas" in clash.stderr
    kubectl("apply", "--server-side", "--field-manager", "bob", "--force-conflicts", "-f", "-",
            input_text=manifest(3, "app: ssa, team: a"))  # fmt: skip
    assert kubectl("get", "deploy", "ssa", "-o", "jsonpath={.spec.replicas}").stdout == "3"
    managers = kubectl("get", "deploy", "ssa", "--show-managed-fields", "-o",
                       "jsonpath={.metadata.managedFields[*].manager}").stdout.split()  # fmt: skip
    assert "alice" in managers and "bob" in managers
    # alice and bob both set team; once neither does, it goes
    for who in ("alice", "bob"):
        kubectl("apply", "--server-side", "--field-manager", who, "--force-conflicts", "-f", "-",
                input_text=manifest(3, "app: ssa"))  # fmt: skip
    labels = kubectl("get", "deploy", "ssa", "-o", "jsonpath={.metadata.labels}").stdout
    assert "team" not in labels and "ssa" in labels


# ---- port-forward and exec on both transports ---------------------------------------------------


@pytest.fixture(scope="module")
def web(cluster: LocalCluster, kubectl: Kubectl) -> str:
    """A pod serving the node's /usr/bin over HTTP; answers the sha256 of its python3, which
    takes many SPDY frames to send."""
    kubectl("run", "pf-web", "--image=tools", "--port=80", "--command", "--",
            "python3", "-m", "http.server", "80", "-d", "/usr/bin")  # fmt: skip
    cluster.wait_ready(1, selector="run=pf-web")
    listening = "import socket; socket.create_connection(('127.0.0.1', 80), 1)"
    wait_until(lambda: kubectl("exec", "pf-web", "--", "python3", "-c", listening,
                               check=False).returncode == 0,
               30, what="pf-web listening")  # fmt: skip
    out = kubectl("exec", "pf-web", "--", "sha256sum", "/usr/bin/python3").stdout
    return out.split()[0]


@pytest.mark.parametrize("transport", ["websocket", "spdy"])
def test_port_forward(kubectl: Kubectl, web: str, transport: str) -> None:
    with port_forward(kubectl, transport, "pod/pf-web", 80) as port:
        assert b"Directory listing for /" in curl(port, "/")
        assert hashlib.sha256(curl(port, "/python3")).hexdigest() == web
        assert b"Directory listing for /" in curl(port, "/")  # a third connection


@pytest.mark.parametrize("transport", ["websocket", "spdy"])
def test_port_forward_to_a_closed_port_reports_the_error(
    kubectl: Kubectl, web: str, transport: str
) -> None:
    """As against a real cluster, kubectl prints the kubelet's reason and gives up."""
    port = free_port()
    env = {**os.environ, "KUBECTL_PORT_FORWARD_WEBSOCKETS": WEBSOCKETS[transport]}
    argv = kubectl.argv("port-forward", "--address", "127.0.0.1", "pod/pf-web", f"{port}:81")
    with subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as proc:  # fmt: skip
        try:
            read_until(proc, proc.stdout, rf"Forwarding from 127.0.0.1:{port} -> 81")
            failed = subprocess.run(["curl", "-s", "--max-time", "20", f"http://127.0.0.1:{port}/"],
                                    capture_output=True, timeout=30)  # fmt: skip
            assert failed.returncode != 0
            _, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 1
    assert b"an error occurred forwarding " + f"{port} -> 81".encode() in err, err
    assert b"error forwarding port 81 to pod" in err, err


def test_exec_over_spdy(kubectl: Kubectl, web: str) -> None:
    env = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}
    out = kubectl("exec", "-i", "pf-web", "--", "sh", "-c", "wc -c; echo oops >&2",
                  input_text="x" * 100_000, env=env)  # fmt: skip
    assert out.stdout.strip() == "100000" and out.stderr == "oops\n"
    failed = kubectl("exec", "pf-web", "--", "sh", "-c", "exit 3", env=env, check=False)
    assert failed.returncode == 3, failed.stderr
    tty = kubectl("exec", "-it", "pf-web", "--", "echo", "hi", env=env)
    assert tty.stdout.replace("\r", "") == "hi\n"
    logged = kubectl("exec", "pf-web", "-v=6", "--", "true", env=env).stderr
    assert re.search(r"POST \S+/pods/pf-web/exec\S* 101 Switching Protocols", logged), logged


def test_attach_over_spdy(cluster: LocalCluster, kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", input_text=(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: talker, labels: {run: talker}}\n"
        "spec:\n  restartPolicy: Never\n  containers:\n  - name: talker\n    image: tools\n"
        "    stdin: true\n    stdinOnce: true\n"
        "    command: [sh, -c, 'while read line; do echo got $line; done']\n"))  # fmt: skip
    cluster.wait_ready(1, selector="run=talker")
    env = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}
    out = kubectl("attach", "-i", "talker", input_text="one\ntwo\n", env=env, timeout_s=30)
    assert "got one\ngot two\n" in out.stdout, out


def test_daemon_set_rollout(cluster: LocalCluster, kubectl: Kubectl) -> None:
    kubectl("apply", "-f", str(REPO / "examples/sample-daemonset.yaml"))
    kubectl("rollout", "status", "ds/node-echo", "--timeout", "90s", timeout_s=120)
    out = kubectl("get", "ds", "node-echo", "-o", "wide").stdout
    columns = "DESIRED CURRENT READY UP-TO-DATE AVAILABLE NODE SELECTOR AGE CONTAINERS IMAGES"
    assert _header(out) == ["NAME", *columns.split(), "SELECTOR"]
    assert out.splitlines()[1].split()[1:7] == ["2", "2", "2", "2", "2", "<none>"]
    nodes = kubectl("get", "pods", "-l", "app=node-echo", "-o",
                    "jsonpath={.items[*].spec.nodeName}").stdout.split()  # fmt: skip
    assert sorted(nodes) == ["node-1", "node-2"]
    assert "daemonset.apps/node-echo" in kubectl("get", "all").stdout
    kubectl("set", "image", "ds/node-echo", "echo=amsy810/echo-nginx:v2.1")
    done = kubectl("rollout", "status", "ds/node-echo", "--timeout", "120s", timeout_s=150)
    assert 'daemon set "node-echo" successfully rolled out' in done.stdout
    images = kubectl("get", "pods", "-l", "app=node-echo", "-o",
                     "jsonpath={.items[*].spec.containers[0].image}").stdout.split()  # fmt: skip
    assert images == ["amsy810/echo-nginx:v2.1"] * 2
    history = kubectl("rollout", "history", "ds/node-echo").stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line] == ["1", "2"], history
    first = kubectl("rollout", "history", "ds/node-echo", "--revision", "1").stdout
    assert "amsy810/echo-nginx:v2.0" in first
    undone = kubectl("rollout", "undo", "ds/node-echo").stdout
    assert "daemonset.apps/node-echo rolled back" in undone
    kubectl("rollout", "status", "ds/node-echo", "--timeout", "120s", timeout_s=150)
    images = kubectl("get", "pods", "-l", "app=node-echo", "-o",
                     "jsonpath={.items[*].spec.containers[0].image}").stdout.split()  # fmt: skip
    assert images == ["amsy810/echo-nginx:v2.0"] * 2
    revisions = kubectl("get", "controllerrevisions").stdout.splitlines()
    assert revisions[0].split() == ["NAME", "CONTROLLER", "REVISION", "AGE"]
    assert sorted(line.split()[1:3] for line in revisions[1:]) == [
        ["daemonset.apps/node-echo", "2"], ["daemonset.apps/node-echo", "3"]]  # fmt: skip
    kubectl("delete", "ds", "node-echo")
    wait_until(lambda: not kubectl("get", "pods", "-l", "app=node-echo", "-o", "name").stdout,
               60, what="the daemon pods to go")  # fmt: skip
