"""ConfigMaps and Secrets in pods on a local cluster (`knemu up`): volumes (with updates
through the ``..data`` swap), env valueFrom and envFrom, for a real image run by runc and for a
built-in workload; a missing ConfigMap holds the container in CreateContainerConfigError with
the kubelet's event until it is created.

Needs root, runc, skopeo, umoci and busybox-static (the test image, knemu.testing_images).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from localcluster import LocalCluster, local_cluster

from knemu.testing import wait_until
from knemu.testing_images import WEB_REF, build_test_images

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(600)]

SOURCES = """apiVersion: v1
kind: ConfigMap
metadata: {name: app}
data: {greeting: hello, app.conf: "port=8080"}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: s3cr3t}
"""

CONSUMER = f"""apiVersion: v1
kind: Pod
metadata: {{name: consumer}}
spec:
  containers:
  - name: app
    image: {WEB_REF}
    command: ["sleep", "100000"]
    resources: {{requests: {{memory: 32Mi}}}}
    env:
    - {{name: GREETING, valueFrom: {{configMapKeyRef: {{name: app, key: greeting}}}}}}
    - {{name: PW, valueFrom: {{secretKeyRef: {{name: creds, key: password}}}}}}
    - {{name: MEM_MI, valueFrom: {{resourceFieldRef: {{resource: requests.memory,
                                                     divisor: 1Mi}}}}}}
    - {{name: POD, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    envFrom:
    - {{prefix: CM_, configMapRef: {{name: app}}}}
    - {{configMapRef: {{name: not-there, optional: true}}}}
    volumeMounts:
    - {{name: cfg, mountPath: /etc/app}}
    - {{name: sec, mountPath: /etc/creds, readOnly: true}}
  volumes:
  - {{name: cfg, configMap: {{name: app, defaultMode: 0440}}}}
  - name: sec
    secret:
      secretName: creds
      items: [{{key: password, path: db/password, mode: 0400}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: builtin-consumer}}
spec:
  containers:
  - name: tools
    image: tools
    command: ["sleep", "100000"]
    env: [{{name: GREETING, valueFrom: {{configMapKeyRef: {{name: app, key: greeting}}}}}}]
    envFrom: [{{secretRef: {{name: creds}}}}]
    volumeMounts: [{{name: cfg, mountPath: /tmp/app, readOnly: true}}]
  volumes: [{{name: cfg, configMap: {{name: app}}}}]
"""

WAITER = """apiVersion: v1
kind: Pod
metadata: {name: waiter}
spec:
  containers:
  - name: tools
    image: tools
    command: ["sleep", "100000"]
    env: [{name: LATER, valueFrom: {configMapKeyRef: {name: later, key: k}}}]
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    archives = build_test_images(tmp_path_factory.mktemp("images"))
    root = tmp_path_factory.mktemp("knemu-state")
    with local_cluster(root, nodes=2) as c:
        archive = str(archives[WEB_REF])
        c.knemu("image", "--cluster", c.name, "--state-dir", str(root), "load", "-i", archive)
        yield c


def _run(c: LocalCluster, pod: str, *argv: str) -> str:
    return c.knemu("exec", pod, "--", *argv).stdout


def _env(c: LocalCluster, pod: str) -> dict[str, str]:
    lines = _run(c, pod, "env").splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def test_volumes_and_env_from_config_maps_and_secrets(cluster: LocalCluster) -> None:
    c = cluster
    c.apply(SOURCES)
    c.apply(CONSUMER)
    c.wait_ready(2, timeout_s=90)
    env = _env(c, "consumer")
    want = {"GREETING": "hello", "PW": "s3cr3t", "MEM_MI": "32", "POD": "consumer",
            "CM_greeting": "hello", "CM_app.conf": "port=8080"}  # fmt: skip
    assert {k: env.get(k) for k in want} == want, env
    assert _run(c, "consumer", "cat", "/etc/app/app.conf") == "port=8080"
    assert _run(c, "consumer", "cat", "/etc/creds/db/password") == "s3cr3t"
    modes = _run(c, "consumer", "busybox", "stat", "-L", "-c", "%a", "/etc/app/greeting",
                 "/etc/creds/db/password").split()  # fmt: skip
    assert modes == ["440", "400"]
    # The secret volume is a tmpfs (kept off the node's disk); ..data is the atomic link.
    mounts = _run(c, "consumer", "cat", "/proc/mounts")
    assert any(line.split()[1:3] == ["/etc/creds", "tmpfs"] for line in mounts.splitlines())
    assert "..data -> " in _run(c, "consumer", "ls", "-la", "/etc/app")
    builtin = _env(c, "builtin-consumer")
    assert (builtin.get("GREETING"), builtin.get("password")) == ("hello", "s3cr3t")
    # A built-in container mounts volumes in its own mount namespace (under its /tmp here).
    assert _run(c, "builtin-consumer", "cat", "/tmp/app/greeting") == "hello"
    assert c.exec("builtin-consumer", "touch /tmp/app/x").returncode != 0  # read-only

    # An update reaches the volume (env stays as the container started, as in Kubernetes).
    c.apply(SOURCES.replace("greeting: hello", "greeting: bonjour"))
    wait_until(
        lambda: _run(c, "consumer", "cat", "/etc/app/greeting") == "bonjour",
        30, what="the updated ConfigMap in the pod's volume",
    )  # fmt: skip
    assert _env(c, "consumer")["GREETING"] == "hello"
    wait_until(
        lambda: _run(c, "builtin-consumer", "cat", "/tmp/app/greeting") == "bonjour",
        30, what="the update in the built-in container's volume",
    )  # fmt: skip


def _waiting_reason(pod: dict[str, Any]) -> str:
    statuses = pod.get("status", {}).get("containerStatuses") or [{}]
    reason: str = statuses[0].get("state", {}).get("waiting", {}).get("reason", "")
    return reason


def test_missing_config_map_waits_with_an_event_until_it_exists(cluster: LocalCluster) -> None:
    c = cluster
    c.apply(WAITER)
    wait_until(
        lambda: _waiting_reason(c.get("/api/v1/namespaces/default/pods/waiter"))
        == "CreateContainerConfigError",
        60, what="waiter in CreateContainerConfigError",
    )  # fmt: skip

    def event() -> bool:
        events = c.get("/api/v1/namespaces/default/events")["items"]
        return any(
            e["involvedObject"]["name"] == "waiter" and e["reason"] == "Failed"
            and 'configmap "later" not found' in e["message"]
            for e in events
        )  # fmt: skip

    wait_until(event, 30, what="the kubelet's Failed event naming the ConfigMap")
    c.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: later}\ndata: {k: arrived}\n")
    wait_until(
        lambda: _env(c, "waiter").get("LATER") == "arrived" if _is_running(c) else False,
        60, what="waiter running with the ConfigMap's value",
    )  # fmt: skip


def _is_running(c: LocalCluster) -> bool:
    pod = c.get("/api/v1/namespaces/default/pods/waiter")
    statuses = pod.get("status", {}).get("containerStatuses") or [{}]
    return "running" in statuses[0].get("state", {})
