"""The real kubectl against a local cluster: kubeconfig, apply with validation, explain,
server-side tables, ``get all``.

kubectl runs as a subprocess with the kubeconfig ``knemu up`` wrote (in the test's temporary
directory, never ~/.kube/config) and its own discovery cache.  Skips only when kubectl is not
on PATH (CI has it, so there the suite runs).
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from localcluster import REPO, LocalCluster, local_cluster

from knemu import pki
from knemu.testing import wait_until, write_kubeconfig

KUBECTL = shutil.which("kubectl")
pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(KUBECTL is None, reason="kubectl is not on PATH (install it to run these)"),
]


class Kubectl:
    def __init__(self, cluster: LocalCluster, cache: Path) -> None:
        self.cluster, self.cache = cluster, cache

    def __call__(
        self, *args: str, check: bool = True, input_text: str | None = None, timeout_s: float = 60
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(KUBECTL), "--kubeconfig", str(self.cluster.kubeconfig), "--cache-dir",
                str(self.cache), *args]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, input=input_text,
                              timeout=timeout_s, check=False)  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} -> {proc.returncode}\n"
                                 f"{proc.stdout}\n{proc.stderr}")  # fmt: skip
        return proc


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("knemu-state"), nodes=2) as c:
        yield c


@pytest.fixture(scope="module")
def kubectl(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    return Kubectl(cluster, tmp_path_factory.mktemp("kube-cache"))


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
    ca = pki.Issued(*(read_bytes(data / "pki" / f"ca.{ext}") for ext in ("crt", "key")))
    cert = pki.issue(ca, "jane", ["qa"])
    jane = pki.Credentials(cluster.server, ca.cert_pem, cert.cert_pem, cert.key_pem)
    as_jane = Kubectl(cluster, kubectl.cache)
    as_jane.cluster = copy_with_kubeconfig(cluster, write_kubeconfig(jane, tmp_path / "jane"))
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
    as_nobody = Kubectl(cluster, kubectl.cache)
    as_nobody.cluster = copy_with_kubeconfig(cluster, write_kubeconfig(nobody, tmp_path / "no"))
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


def read_bytes(path: Path) -> bytes:
    return path.read_bytes()


def copy_with_kubeconfig(cluster: LocalCluster, kubeconfig: Path) -> LocalCluster:
    other = copy.copy(cluster)
    other.kubeconfig = kubeconfig
    return other


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
