"""Sans-I/O parts of the container runtime: image references and configs, the OCI spec,
pull policy, volumes, cgroup mounts, init container phases, quantities."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from knemu.apiserver.grpc_api.pod_runtime import cpu_millis, env_var_to_proto, memory_bytes
from knemu.cli.output.printers import pod_status
from knemu.node_agent.runtime import image_pull, init_containers, probes
from knemu.node_agent.runtime.config_sources import NodeCapacity, resolve_env
from knemu.node_agent.runtime.containers import ContainerCore, ContainerStatus
from knemu.node_agent.runtime.downward import FieldRefError, PodFields
from knemu.node_agent.runtime.images import (
    BadImage,
    ImageConfig,
    archive_refs,
    index_refs,
    normalize_ref,
    short_ref,
)
from knemu.node_agent.runtime.oci_spec import (
    BindMount,
    ContainerRun,
    build_spec,
    process_args,
    process_env,
    resolve_user,
)
from knemu.node_agent.runtime.runc import cgroup_mount_plan
from knemu.node_agent.runtime.volumes import VolumeError, downward_files, plan_mounts
from knemu.proto import knemu_pb2 as pb

REFS = [
    ("busybox", "docker.io/library/busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36"),
    ("amsy810/tools:v2.0", "docker.io/amsy810/tools:v2.0"),
    ("ghcr.io/org/app", "ghcr.io/org/app:latest"),
    ("localhost:5000/app:v1", "localhost:5000/app:v1"),
    ("localhost/app", "localhost/app:latest"),
    ("knemu.test/web:v1", "knemu.test/web:v1"),
    ("app@sha256:" + "a" * 64, "docker.io/library/app@sha256:" + "a" * 64),
]


@pytest.mark.parametrize(("image", "ref"), REFS)
def test_normalize_ref(image: str, ref: str) -> None:
    assert normalize_ref(image) == ref
    assert normalize_ref(ref) == ref


@pytest.mark.parametrize("bad", ["", "UPPER/case", "app:bad tag", "app@sha256:12", "a//b"])
def test_normalize_ref_rejects_with_a_reason(bad: str) -> None:
    with pytest.raises(BadImage):
        normalize_ref(bad)


def test_short_ref() -> None:
    assert short_ref("docker.io/library/busybox:latest") == "busybox:latest"
    assert short_ref("docker.io/amsy810/tools:v2") == "amsy810/tools:v2"
    assert short_ref("knemu.test/web:v1") == "knemu.test/web:v1"


@given(st.text(max_size=40))
def test_normalize_ref_parses_or_rejects(text: str) -> None:
    try:
        ref = normalize_ref(text)
    except BadImage:
        return
    assert normalize_ref(ref) == ref


def test_image_config_and_archive_names() -> None:
    cfg = ImageConfig.from_json(json.dumps({"config": {
        "Entrypoint": ["/app"], "Cmd": ["--x"], "Env": ["A=1"], "WorkingDir": "/w",
        "User": "app", "ExposedPorts": {"80/tcp": {}}}}).encode())  # fmt: skip
    assert (cfg.entrypoint, cfg.cmd, cfg.env, cfg.working_dir, cfg.user, cfg.exposed_ports) == (
        ("/app",), ("--x",), ("A=1",), "/w", "app", ("80/tcp",))  # fmt: skip
    with pytest.raises(BadImage, match="Cmd"):
        ImageConfig.from_json(b'{"config": {"Cmd": "not a list"}}')
    with pytest.raises(BadImage):
        ImageConfig.from_json(b"{")
    manifest = json.dumps([{"RepoTags": ["web:v1", "knemu.test/x:2"]}]).encode()
    assert archive_refs(manifest, None) == [
        ("web:v1", "docker.io/library/web:v1"), ("knemu.test/x:2", "knemu.test/x:2")]  # fmt: skip
    index = json.dumps({"manifests": [
        {"digest": "sha256:" + "b" * 64,
         "annotations": {"org.opencontainers.image.ref.name": "knemu.test/x:2"}},
        {"digest": "sha256:" + "c" * 64}]}).encode()  # fmt: skip
    assert archive_refs(None, index) == [("knemu.test/x:2", "knemu.test/x:2")]
    assert index_refs(index) == {"knemu.test/x:2": "sha256:" + "b" * 64}


# ---- the OCI spec --------------------------------------------------------------------------

IMG = ImageConfig(entrypoint=("/entry",), cmd=("cmd-arg",), env=("PATH=/bin", "A=image"),
                  working_dir="/img", user="app")  # fmt: skip
PASSWD = "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n"


def test_command_and_args_as_kubernetes_combines_them() -> None:
    assert process_args(IMG, (), ()) == ["/entry", "cmd-arg"]
    assert process_args(IMG, ("/cmd",), ()) == ["/cmd"]
    assert process_args(IMG, (), ("a",)) == ["/entry", "a"]
    assert process_args(IMG, ("/cmd",), ("a",)) == ["/cmd", "a"]


def test_env_image_first_then_container() -> None:
    env = process_env(IMG, "pod-1", [("A", "spec"), ("B", "2")])
    assert env == ["PATH=/bin", "A=spec", "HOSTNAME=pod-1", "B=2", "HOME=/root"]


def test_user_resolution() -> None:
    assert resolve_user("app", None, None, PASSWD, "") == (1000, 1001)
    assert resolve_user("app", 5, None, PASSWD, "") == (5, 1001)
    assert resolve_user("", 1000, None, PASSWD, "") == (1000, 1001)
    assert resolve_user("app", None, 7, PASSWD, "") == (1000, 7)
    assert resolve_user("42:43", None, None, PASSWD, "") == (42, 43)
    assert resolve_user("", None, None, "", "") == (0, 0)
    with pytest.raises(BadImage, match="unable to find user nobody"):
        resolve_user("nobody", None, None, PASSWD, "")


def test_build_spec_namespaces_mounts_limits() -> None:
    run = ContainerRun(image=IMG, hostname="p", netns_path="/proc/9/ns/net", passwd=PASSWD,
                       pid_ns_path="/proc/8/ns/pid_for_children", working_dir="/w",
                       mounts=(BindMount("/node/v", "/data", read_only=True),),
                       memory_limit_bytes=64 << 20, cpu_limit_millis=250,
                       cgroups_path="/knemu/n/c")  # fmt: skip
    spec = build_spec(run)
    ns = {n["type"]: n.get("path") for n in spec["linux"]["namespaces"]}
    assert ns == {"pid": "/proc/8/ns/pid_for_children", "network": "/proc/9/ns/net",
                  "ipc": None, "uts": None, "mount": None}  # fmt: skip
    assert spec["hostname"] == "p" and spec["process"]["cwd"] == "/w"
    assert spec["process"]["user"] == {"uid": 1000, "gid": 1001}
    assert spec["mounts"][-1] == {"destination": "/data", "type": "bind", "source": "/node/v",
                                  "options": ["rbind", "rprivate", "ro"]}  # fmt: skip
    res = spec["linux"]["resources"]
    assert res["memory"] == {"limit": 64 << 20}
    assert res["cpu"] == {"quota": 25_000, "period": 100_000}
    assert spec["linux"]["cgroupsPath"] == "/knemu/n/c"
    with pytest.raises(BadImage, match="no command"):
        build_spec(ContainerRun(image=ImageConfig(), hostname="p", netns_path="/x"))


# ---- pull policy, volumes, cgroups, init containers, quantities ----------------------------


def test_pull_decisions() -> None:
    assert image_pull.decide("a", "Always", True, "x", "node-1").kind == "store"
    assert image_pull.decide("nginx", "Always", False, "", "node-1").kind == "builtin"
    never = image_pull.decide("a:v1", "Never", False, "cannot", "node-1")
    assert never.reason == "ErrImageNeverPull" and "knemu image load a:v1" in never.message
    pull = image_pull.decide("a:v1", "IfNotPresent", False, "cannot", "node-1")
    assert pull.reason == "ErrImagePull" and "node-1" in pull.message
    assert [image_pull.pull_backoff_s(n) for n in (1, 2, 3, 9)] == [10, 20, 40, 300]


def test_volume_mount_plan() -> None:
    mounts = [pb.VolumeMount(name="v", mount_path="/d", sub_path="sub", read_only=True)]
    assert plan_mounts({"v": "/node/v"}, mounts, "c") == [BindMount("/node/v/sub", "/d", True)]
    with pytest.raises(VolumeError, match="names no volume"):
        plan_mounts({}, mounts, "c")
    with pytest.raises(VolumeError, match=r"without '\.\.'"):
        plan_mounts({"v": "/n"}, [pb.VolumeMount(name="v", mount_path="/d", sub_path="../x")], "c")


def test_downward_files() -> None:
    pod = pb.Pod(metadata=pb.ObjectMeta(name="p", namespace="ns", labels={"b": "2", "a": "1"}),
                 node_name="node-1")  # fmt: skip
    vol = pb.Volume(kind="downwardAPI", items=[
        pb.DownwardAPIFile(path="n", field_path="metadata.name"),
        pb.DownwardAPIFile(path="l", field_path="metadata.labels"),
        pb.DownwardAPIFile(path="ip", field_path="status.podIP")])  # fmt: skip
    assert downward_files(pod, vol, "10.244.1.5") == {"n": "p", "l": 'a="1"\nb="2"\n',
                                                      "ip": "10.244.1.5"}  # fmt: skip
    bad = pb.Volume(items=[pb.DownwardAPIFile(path="x", field_path="spec.nope")])
    with pytest.raises(VolumeError, match="not supported"):
        downward_files(pod, bad, "")


def test_cgroup_mount_plan() -> None:
    mounted = "30 20 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    assert cgroup_mount_plan(mounted, "4:memory:/\n") == []
    plan = cgroup_mount_plan("", "2:cpu,cpuacct:/\n1:name=systemd:/\n0::/\n")
    assert ["mount", "-t", "cgroup", "-o", "cpu,cpuacct", "cgroup",
            "/sys/fs/cgroup/cpu,cpuacct"] in plan  # fmt: skip
    assert ["mount", "-t", "cgroup", "-o", "none,name=systemd", "cgroup",
            "/sys/fs/cgroup/systemd"] in plan  # fmt: skip
    assert plan[-1] == ["mount", "-t", "cgroup2", "cgroup2", "/sys/fs/cgroup/unified"]
    assert cgroup_mount_plan("", "0::/\n") == [["mount", "-t", "cgroup2", "cgroup2",
                                               "/sys/fs/cgroup"]]  # fmt: skip


def test_init_phase_and_restart_policy() -> None:
    done = ContainerStatus("a", state="terminated", exit_code=0)
    failed = ContainerStatus("b", state="terminated", exit_code=1)
    running = ContainerStatus("c", state="running")
    assert init_containers.init_phase([done], "Always") is None
    assert init_containers.init_phase([done, running], "Always") == "Pending"
    assert init_containers.init_phase([failed], "Never") == "Failed"
    assert init_containers.init_phase([failed], "OnFailure") == "Pending"
    assert init_containers.init_restart_policy("Always") == "OnFailure"
    assert init_containers.init_restart_policy("Never") == "Never"


def test_last_state_recorded_only_when_restarting() -> None:
    core = ContainerCore("c", "Always", 1.0, 4.0)
    core.on_started(0.0, 100.0)
    assert core.on_exited(3, 1.0, wall=101.0) == 0.0
    assert core.last == (3, "Error", 100.0, 101.0)
    never = ContainerCore("c", "Never")
    never.on_started(0.0, 100.0)
    assert never.on_exited(0, 1.0) is None and never.last is None


def test_quantities() -> None:
    assert memory_bytes("64Mi") == 64 << 20
    assert memory_bytes("1G") == 10**9
    assert memory_bytes("1e3") == 1000
    assert memory_bytes("bogus") == 0
    assert cpu_millis("250m") == 250
    assert cpu_millis("1.5") == 1500
    assert cpu_millis(2) == 2000


def test_printer_shows_init_progress() -> None:
    def pod(*inits: dict[str, object]) -> dict[str, object]:
        return {"spec": {"containers": [{"name": "app"}]}, "status": {
            "phase": "Pending", "initContainerStatuses": list(inits),
            "containerStatuses": [{"name": "app", "state": {"waiting": {
                "reason": "PodInitializing"}}}]}}  # fmt: skip

    ok = {"state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
    run = {"state": {"running": {}}}
    assert pod_status(pod(ok, run))[0] == "Init:1/2"
    bad = {"state": {"terminated": {"exitCode": 7, "reason": "Error"}}}
    assert pod_status(pod(bad))[0] == "Init:Error"
    pull = {"state": {"waiting": {"reason": "ImagePullBackOff"}}}
    assert pod_status(pod(pull))[0] == "Init:ImagePullBackOff"


def test_env_field_refs() -> None:
    literal = env_var_to_proto({"name": "A", "value": "1"})
    ref = env_var_to_proto({"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}})
    label = env_var_to_proto(
        {"name": "L", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}}
    )
    other = env_var_to_proto({"name": "S", "valueFrom": {"fileKeyRef": {"path": "x"}}})
    assert (ref.field_path, other.unsupported) == ("spec.nodeName", "fileKeyRef")
    pod = pb.Pod(metadata=pb.ObjectMeta(name="p", labels={"app": "web"}), node_name="node-2")
    spec = pb.Container(name="c", env=[literal, ref, label])
    cap = NodeCapacity(2000, 2**30)

    def resolve(c: pb.Container, fields: PodFields) -> pb.Container:
        return resolve_env(c, pod, fields, {}, cap).spec

    out = resolve(spec, PodFields(pod, "10.244.2.3", "192.168.59.12"))
    assert [(v.name, v.value) for v in out.env] == [("A", "1"), ("N", "node-2"), ("L", "web")]
    assert spec.env[1].value == ""  # the original is untouched
    with pytest.raises(FieldRefError, match="fileKeyRef is not supported"):
        resolve(pb.Container(name="c", env=[other]), PodFields(pod))
    with pytest.raises(FieldRefError, match="not supported"):
        resolve(pb.Container(name="c", env=[pb.EnvVar(name="x", field_path="spec.x")]),
                PodFields(pod))  # fmt: skip


def test_startup_tracker_starts_on_success_and_fails_after_the_threshold() -> None:
    spec = probes.ProbeSpec("exec", initial_delay_s=5, period_s=2, failure_threshold=3)
    t = probes.StartupTracker(spec, started=100.0)
    assert t.next_due() == 105.0
    assert [t.record(False, 105.0), t.record(False, 107.0)] == [None, None]
    assert t.next_due() == 109.0 and t.record(True, 109.0) == "started"
    t = probes.StartupTracker(spec, started=0.0)
    assert [t.record(False, float(n)) for n in range(3)] == [None, None, "failed"]


@pytest.mark.parametrize(
    ("policy", "in_store", "pulled", "kind"),
    [
        ("IfNotPresent", False, False, "pull"),
        ("IfNotPresent", True, False, "store"),
        ("Always", True, False, "pull"),  # every start pulls ...
        ("Always", True, True, "store"),  # ... once
        ("Never", False, False, "missing"),
        ("", False, False, "pull"),
    ],
)
def test_pull_decisions_for_a_registry_the_node_pulls_from(
    policy: str, in_store: bool, pulled: bool, kind: str
) -> None:
    decision = image_pull.decide("r.example/a:1", policy, in_store, "no built-in", "node-1",
                                 pulled=pulled, pullable=True)  # fmt: skip
    assert decision.kind == kind
    unlisted = image_pull.decide("r.example/a:1", "Always", False, "no built-in", "node-1")
    assert (unlisted.kind, unlisted.reason) == ("missing", "ErrImagePull")


def test_plain_http_only_for_loopback_registries() -> None:
    assert image_pull.plain_http("127.0.0.1:5000") and image_pull.plain_http("localhost:5000")
    assert not image_pull.plain_http("registry.example:5000")
    assert not image_pull.plain_http("10.0.0.1:5000")
    assert image_pull.registry_of("127.0.0.1:5000/knemu/web:v1") == "127.0.0.1:5000"
