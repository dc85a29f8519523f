"""Real container images on a local cluster (`knemu up`): loaded with `knemu image load`,
run by runc in the pods' namespaces, reached across nodes through a Service.

The two images are written offline from the node's static busybox (knemu.testing_images);
needs root, runc, skopeo, umoci and busybox-static.  All traffic stays inside the cluster's
namespaces.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from localcluster import LocalCluster, local_cluster, tools_pod, wait_backends

from knemu.testing import wait_until
from knemu.testing_images import CRASHER_REF, WEB_REF, build_test_images

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(600)]

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
        imagePullPolicy: IfNotPresent
        ports: [{{containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}
        volumeMounts: [{{name: shared, mountPath: /www/shared}}]
      - name: shell
        image: {WEB_REF}
        command: ["sleep", "100000"]
        volumeMounts: [{{name: shared, mountPath: /shared}}]
      volumes:
      - name: shared
        emptyDir: {{}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
"""

CRASHER = f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: crasher}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: crasher}}}}
  template:
    metadata: {{labels: {{app: crasher}}}}
    spec:
      containers:
      - {{name: crasher, image: "{CRASHER_REF}", imagePullPolicy: IfNotPresent}}
"""

ABSENT = """apiVersion: v1
kind: Pod
metadata: {name: absent}
spec:
  containers:
  - {name: c, image: "knemu.test/absent:v1", imagePullPolicy: IfNotPresent}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    archives = build_test_images(tmp_path_factory.mktemp("images"))
    root = tmp_path_factory.mktemp("knemu-state")
    with local_cluster(root, nodes=2) as c:
        args = [a for p in archives.values() for a in ("-i", str(p))]
        out = c.knemu("image", "--cluster", c.name, "--state-dir", str(root), "load", *args)
        assert out.stdout.count("loaded") == 4, out.stdout
        yield c
    assert not _leftover_cgroups(c), "knemu down left cgroups behind"
    assert str(root) not in Path("/proc/mounts").read_text(), "knemu down left mounts behind"


def _leftover_cgroups(c: LocalCluster) -> list[Path]:
    return list(Path("/sys/fs/cgroup").glob(f"*/knemu/knemu-{c.name}-*"))


def _pod(c: LocalCluster, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = c.get(f"/api/v1/namespaces/default/pods/{name}")
    return obj


def test_image_ls_shows_both_images_on_every_node(cluster: LocalCluster) -> None:
    c = cluster
    out = c.knemu("image", "--cluster", c.name, "--state-dir", str(c.state_root), "ls").stdout
    for node in ("node-1", "node-2"):
        for ref in (WEB_REF, CRASHER_REF):
            assert re.search(rf"^{node}\s+{re.escape(ref)}\s", out, re.M), out


def test_service_reaches_real_containers_across_nodes(cluster: LocalCluster) -> None:
    c = cluster
    c.apply(WEB)
    pods = c.wait_ready(2, selector="app=web", timeout_s=90)
    wait_backends(c, "default/web", 2)
    names = {p["metadata"]["name"] for p in pods}
    nodes = {p["spec"]["nodeName"] for p in pods}
    c.apply(tools_pod("client", "node-1"))
    c.wait_ready(1, selector="role=tools")
    seen: set[str] = set()

    def both_answer() -> bool:
        out = c.exec("client", "curl -s --max-time 2 http://web/").stdout
        seen.update(line.split()[1] for line in out.splitlines() if line.startswith("web "))
        return seen == names

    wait_until(both_answer, 60, what=f"answers from {names} (on {nodes}) through the Service")


def test_exec_sees_the_image_and_only_the_pods_processes(cluster: LocalCluster) -> None:
    c = cluster
    obj = c.wait_ready(2, selector="app=web")[0]
    pod, ip = obj["metadata"]["name"], obj["status"]["podIP"]
    ps = c.knemu("exec", pod, "-c", "web", "--", "ps", "-o", "pid,args").stdout
    rows = [line.split(None, 1) for line in ps.strip().splitlines()[1:]]
    assert rows[0][0] == "1" and "httpd" in rows[0][1], ps
    assert not any("knemu" in args or "sleep" in args for _, args in rows), ps
    release = c.knemu("exec", pod, "-c", "web", "--", "cat", "/etc/os-release").stdout
    assert 'NAME="knemu test image"' in release
    assert c.knemu("exec", pod, "-c", "shell", "--", "hostname").stdout.strip() == pod
    # The ServiceAccount token, CA and namespace, read-only (the kubelet's kube-api-access).
    sa = "/var/run/secrets/kubernetes.io/serviceaccount"
    files = c.knemu("exec", pod, "-c", "shell", "--", "sh", "-c",
                    f"cat {sa}/namespace; echo; head -1 {sa}/ca.crt; cut -c1-3 {sa}/token; "
                    f"touch {sa}/x || echo read-only")  # fmt: skip
    assert files.stdout.splitlines()[:3] == ["default", "-----BEGIN CERTIFICATE-----", "eyJ"]
    assert "read-only" in files.stdout, files.stdout
    # One IPC namespace per pod, shared by its containers (and not the node's).
    ipc = {c.knemu("exec", pod, "-c", name, "--", "readlink", "/proc/self/ns/ipc").stdout
           for name in ("web", "shell")}  # fmt: skip
    assert len(ipc) == 1 and ipc != {os.readlink("/proc/self/ns/ipc") + "\n"}, ipc
    # DNS from inside the image (busybox nslookup reads the pod's resolv.conf).
    svc_ip = c.service("web")["spec"]["clusterIP"]
    look = c.knemu("exec", pod, "-c", "shell", "--", "nslookup", "web.default.svc.cluster.local")
    assert svc_ip in look.stdout, look.stdout
    logs = c.knemu("logs", pod, "-c", "web").stdout
    assert "web listening on 8080" in logs
    # An emptyDir shared by the two containers: the shell writes, the web container serves it.
    c.knemu("exec", pod, "-c", "shell", "--", "sh", "-c", "echo from-shell > /shared/note")
    served = c.exec("client", f"curl -s --max-time 2 http://{ip}:8080/shared/note")
    assert served.stdout.strip() == "from-shell", served


def test_crashing_image_backs_off_and_keeps_last_state(cluster: LocalCluster) -> None:
    c = cluster
    c.apply(CRASHER)
    box: dict[str, Any] = {}

    def restarted() -> bool:
        pods = c.pods(selector="app=crasher")
        statuses = pods[0].get("status", {}).get("containerStatuses") if pods else None
        if statuses and statuses[0].get("restartCount", 0) >= 2:
            box.update(pod=pods[0], status=statuses[0])
            return True
        return False

    wait_until(restarted, 120, what="the crasher to restart twice")
    name = box["pod"]["metadata"]["name"]
    last = box["status"]["lastState"]["terminated"]
    assert last["exitCode"] == 3 and last["reason"] == "Error", box["status"]
    assert "crasher starting on" in c.knemu("logs", name).stdout
    assert "crasher starting on" in c.knemu("logs", "--previous", name).stdout
    events = c.get("/api/v1/namespaces/default/events")["items"]
    assert any(e.get("reason") == "BackOff" and e["involvedObject"]["name"] == name
               for e in events)  # fmt: skip


def test_missing_image_says_how_to_load_it(cluster: LocalCluster) -> None:
    c = cluster
    c.apply(ABSENT)

    def waiting_reason() -> str:
        statuses = _pod(c, "absent").get("status", {}).get("containerStatuses") or [{}]
        return str(statuses[0].get("state", {}).get("waiting", {}).get("reason", ""))

    wait_until(
        lambda: waiting_reason() in ("ErrImagePull", "ImagePullBackOff"), 60, what="ErrImagePull"
    )

    def told_how_to_load() -> bool:  # the event is recorded after the status report
        events = c.get("/api/v1/namespaces/default/events")["items"]
        return any("knemu image load knemu.test/absent:v1" in e.get("message", "") for e in events)

    wait_until(told_how_to_load, 30, what="an event naming `knemu image load`")


def _runc_pids(c: LocalCluster, node: str) -> list[int]:
    root = c.state_root / f"cluster-{c.name}" / node / "runc"
    out = subprocess.run(["runc", "--root", str(root), "list", "-f", "json"],
                         capture_output=True, text=True, check=False).stdout  # fmt: skip
    return [int(e["pid"]) for e in json.loads(out or "null") or [] if e.get("pid")]


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _chaos(c: LocalCluster, *args: str) -> str:
    return c.knemu("chaos", "--runtime", "local", "--cluster", c.name, "--state-dir",
                   str(c.state_root), *args).stdout  # fmt: skip


def test_stop_node_freezes_its_containers(cluster: LocalCluster) -> None:
    c = cluster
    pids = _runc_pids(c, "node-1")
    assert pids, "no runc container on node-1"
    try:
        assert "frozen" in _chaos(c, "stop-node", "node-1")
        wait_until(
            lambda: all(_state(p) == "T" for p in pids), 10, what="node-1's containers stopped"
        )
    finally:
        _chaos(c, "start-node", "node-1")
    wait_until(
        lambda: all(_state(p) != "T" for p in pids), 10, what="node-1's containers running again"
    )


def test_kill_node_takes_its_containers_with_it(cluster: LocalCluster) -> None:
    c = cluster
    on_node = {p["spec"]["nodeName"] for p in c.pods(selector="app=web")}
    victim = "node-2" if "node-2" in on_node else "node-1"
    pids = _runc_pids(c, victim)
    assert pids, f"no runc container on {victim}"
    _chaos(c, "kill-node", victim)
    wait_until(
        lambda: not any(Path(f"/proc/{p}").exists() for p in pids),
        20,
        what=f"the containers of {victim} to die with it",
    )
