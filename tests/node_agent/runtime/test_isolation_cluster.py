"""Pods without a real image on a local cluster: their own PID, mount, UTS and IPC
namespaces, and none of the node's privileges unless their securityContext asks (issue 16).

Needs root and network namespaces; all traffic stays inside the cluster's namespaces.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from localcluster import LocalCluster, local_cluster

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(600)]

CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN = 12, 13, 21


def _pod(name: str, image: str = "tools", security: str = "", extra: str = "") -> str:
    context = f"\n    securityContext: {security}" if security else ""
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec:
  containers:
  - name: c
    image: {image}{context}{extra}
"""


PODS = "---\n".join([
    _pod("plain", extra='\n    command: ["sleep", "100000"]'),
    _pod("root", security="{runAsUser: 0, capabilities: {add: [NET_ADMIN]}}",
         extra='\n    command: ["sleep", "100000"]'),
    _pod("nobody-raw", security="{runAsUser: 1000, capabilities: {add: [NET_RAW]}}",
         extra='\n    command: ["sleep", "100000"]'),
    _pod("priv", security="{privileged: true}", extra='\n    command: ["sleep", "100000"]'),
    _pod("web", image="nginx:1.16", extra="\n    ports: [{containerPort: 80}]"),
])  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("knemu-state"), nodes=1) as c:
        c.apply(PODS)
        c.wait_ready(5, timeout_s=90)
        yield c


def _sh(c: LocalCluster, pod: str, script: str) -> str:
    out = c.exec(pod, script)
    assert out.returncode == 0, f"{pod}: {script}: {out.stdout} {out.stderr}"
    return out.stdout


def _caps(c: LocalCluster, pod: str) -> tuple[int, int, bool]:
    """(uid, effective capabilities, no_new_privs) of a process exec'd into ``pod``."""
    status = dict(line.split(":", 1) for line in _sh(c, pod, "cat /proc/self/status").splitlines())
    uid = int(status["Uid"].split()[0])
    return uid, int(status["CapEff"].strip(), 16), status["NoNewPrivs"].strip() == "1"


def test_a_pod_without_securitycontext_has_no_privileges(cluster: LocalCluster) -> None:
    assert _caps(cluster, "plain") == (65534, 0, True)
    # Its stdio are its own, as runc makes them: /dev/stdout can be reopened by path.
    assert _sh(cluster, "plain", "echo reopened > /dev/stdout") == "reopened\n"
    out = cluster.exec("plain", "touch /etc/knemu-pod-was-here")
    assert out.returncode != 0 and "Permission denied" in out.stderr
    assert not Path("/etc/knemu-pod-was-here").exists()


def test_security_context_grants_what_it_names(cluster: LocalCluster) -> None:
    uid, caps, nnp = _caps(cluster, "root")
    assert uid == 0 and not nnp
    assert caps & (1 << CAP_NET_ADMIN) and caps & (1 << CAP_NET_RAW)
    assert not caps & (1 << CAP_SYS_ADMIN)  # the runtimes' default set, not everything
    uid, caps, nnp = _caps(cluster, "nobody-raw")
    assert (uid, caps, nnp) == (1000, 1 << CAP_NET_RAW, True)
    uid, caps, nnp = _caps(cluster, "priv")
    assert uid == 0 and caps & (1 << CAP_SYS_ADMIN) and not nnp


def test_ps_shows_only_the_pods_processes_and_the_hostname_is_the_pods(
    cluster: LocalCluster,
) -> None:
    rows = _sh(cluster, "plain", "ps -e -o pid=,args=").splitlines()
    args = [row.split(None, 1)[1] for row in rows]
    assert args[0] == "sleep infinity" and rows[0].split()[0] == "1"  # the pod's PID 1
    assert "sleep 100000" in args and not any("knemu" in a for a in args), rows
    assert len(args) <= 4, rows  # holder, container, the exec's nsenter child, ps
    assert _sh(cluster, "plain", "hostname").strip() == "plain"
    web = _sh(cluster, "web", "ps -e -o args=")
    assert "workloads nginx" in web and "sleep 100000" not in web


def test_tmp_is_the_containers_own(cluster: LocalCluster) -> None:
    name = f"knemu-{uuid.uuid4().hex[:8]}"
    _sh(cluster, "plain", f"echo in-pod > /tmp/{name}")
    assert _sh(cluster, "plain", f"cat /tmp/{name}") == "in-pod\n"  # exec sees the same /tmp
    assert not (Path("/tmp") / name).exists()


def test_an_unprivileged_builtin_serves_port_80(cluster: LocalCluster) -> None:
    web = cluster.pods(selector="app=web")[0]["status"]["podIP"]
    out = _sh(cluster, "plain", f"curl -s --max-time 5 http://{web}/")
    assert "From=web" in out
    assert _caps(cluster, "web")[0] == 65534
