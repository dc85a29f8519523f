"""Real images on the pod runtime: runc containers in the pod's network namespace.

Needs root, runc, skopeo and umoci (Debian packages) and busybox-static for the test images,
which are written offline (knemu.testing_images) and imported into the node's store.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from knemu.node_agent.runtime.image_store import ImageStore
from knemu.node_agent.runtime.runc import list_containers
from knemu.proto import knemu_pb2 as pb
from knemu.testing_images import CRASHER_REF, WEB_REF, build_test_images

from .pods_helpers import Harness

pytestmark = [pytest.mark.netns]


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    for tool in ("runc", "skopeo", "umoci"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: apt-get install runc skopeo umoci")
    return build_test_images(tmp_path_factory.mktemp("images"))


@pytest.fixture
async def loaded(harness: Harness, archives: dict[str, Path]) -> Harness:
    store = ImageStore(harness.state_dir / "images")
    for path in archives.values():
        await store.import_archive(path)
    return harness


def running(s: object) -> bool:
    return all(c.state == "running" for c in s.container_statuses)  # type: ignore[attr-defined]


async def exec_out(h: Harness, key: str, container: str, *argv: str) -> tuple[int, str]:
    proc = await h.rt.exec(key, container, list(argv), stdin=False)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


async def test_image_runs_isolated_and_shares_localhost(loaded: Harness) -> None:
    h = loaded
    web = pb.Container(name="web", image=WEB_REF)
    side = pb.Container(name="side", image=WEB_REF, command=["sleep", "1000"],
                        env=[pb.EnvVar(name="GREETING", value="hi"),
                             pb.EnvVar(name="MY_POD", field_path="metadata.name"),
                             pb.EnvVar(name="MY_IP", field_path="status.podIP")])  # fmt: skip
    handle = await h.rt.start_pod(h.pod("webpod", web, side))
    await h.wait_status("default/webpod", running, 30)
    code, ps = await exec_out(h, "default/webpod", "web", "ps", "-o", "pid,args")
    assert code == 0, ps
    lines = [ln.split(None, 1) for ln in ps.strip().splitlines()[1:]]
    assert lines[0][0] == "1" and "httpd" in lines[0][1], ps  # the image's process is PID 1
    assert all("sleep" not in args for _, args in lines), ps  # not the other container's
    _, release = await exec_out(h, "default/webpod", "web", "cat", "/etc/os-release")
    assert "knemu test image" in release
    _, name = await exec_out(h, "default/webpod", "side", "hostname")
    assert name.strip() == "webpod"
    _, env = await exec_out(h, "default/webpod", "side", "env")
    assert "GREETING=hi" in env and "APP=web" in env and "HOSTNAME=webpod" in env
    assert "MY_POD=webpod" in env and f"MY_IP={handle.ip}" in env, env
    # localhost is the pod's: the side container reaches the web container on 127.0.0.1.
    code, page = await exec_out(h, "default/webpod", "side", "wget", "-qO-",
                                "http://127.0.0.1:8080/")  # fmt: skip
    assert code == 0 and page.strip() == "web webpod", page
    log = h.rt.log_path("default/webpod", "web").read_text()
    assert "web listening on 8080" in log
    assert any(e[2] == "Pulled" and "image store" in e[3] for e in h.events)
    # The node's root filesystem stays the node's: a file the container writes is not there.
    await exec_out(h, "default/webpod", "side", "sh", "-c", "echo x > /tmp/knemu-oci-probe")
    assert not Path("/tmp/knemu-oci-probe").exists()
    await h.rt.stop_pod("default/webpod")
    assert await list_containers(h.rt.oci.runc) == []
    assert not any(h.rt.oci.runc.bundles.iterdir())


async def test_crashing_image_restarts_with_backoff(loaded: Harness) -> None:
    h = loaded
    c = pb.Container(name="c", image=CRASHER_REF)
    await h.rt.start_pod(h.pod("crash", c))
    s = await h.wait_status(
        "default/crash", lambda s: s.container_statuses[0].restart_count >= 2, 30
    )
    cs = s.container_statuses[0]
    assert cs.exit_code == 3 or cs.state == "running", cs
    assert "crasher starting on crash" in h.rt.log_path("default/crash", "c").read_text()
    assert cs.last is not None and cs.last[:2] == (3, "Error"), cs
    previous = h.rt.runner("default/crash", "c").previous_log().decode()
    assert previous.count("crasher starting on crash") == 1, previous
    assert any(e[2] == "BackOff" for e in h.events)


async def test_image_user_and_security_context(loaded: Harness) -> None:
    h = loaded
    img_user = pb.Container(name="a", image=CRASHER_REF, command=["sleep", "1000"])
    override = pb.Container(name="b", image=CRASHER_REF, command=["sleep", "1000"],
                            run_as_user=4242, run_as_group=4343)  # fmt: skip
    await h.rt.start_pod(h.pod("users", img_user, override))
    await h.wait_status("default/users", running, 30)
    _, a = await exec_out(h, "default/users", "a", "id")
    assert a.startswith("uid=1000(app) gid=1000(app)"), a
    _, b = await exec_out(h, "default/users", "b", "id")
    assert b.startswith("uid=4242 gid=4343"), b


async def test_missing_image_names_the_load_command(loaded: Harness) -> None:
    h = loaded
    pull = pb.Container(name="p", image="knemu.test/absent:v1", image_pull_policy="IfNotPresent")
    never = pb.Container(name="n", image="knemu.test/absent:v2", image_pull_policy="Never")
    await h.rt.start_pod(h.pod("absent", pull, never))
    s = await h.wait_status(
        "default/absent", lambda s: all(c.reason.startswith("Err") for c in s.container_statuses)
    )
    by_name = {c.name: c for c in s.container_statuses}
    assert by_name["p"].reason == "ErrImagePull"
    assert "knemu image load knemu.test/absent:v1" in by_name["p"].message
    assert by_name["n"].reason == "ErrImageNeverPull"
    assert s.phase == "Pending"


async def test_volumes_and_shared_process_namespace(loaded: Harness, tmp_path: Path) -> None:
    h = loaded
    host_dir = tmp_path / "host"
    volumes = [
        pb.Volume(name="shared", kind="emptyDir"),
        pb.Volume(name="mem", kind="emptyDir", medium="Memory", size_limit_bytes=8 << 20),
        pb.Volume(name="host", kind="hostPath", host_path=str(host_dir),
                  host_path_type="DirectoryOrCreate"),
        pb.Volume(name="info", kind="downwardAPI",
                  items=[pb.DownwardAPIFile(path="name", field_path="metadata.name"),
                         pb.DownwardAPIFile(path="labels", field_path="metadata.labels")]),
    ]  # fmt: skip
    mounts = [pb.VolumeMount(name=n, mount_path=f"/v/{n}") for n in ("shared", "mem", "host")]
    script = "echo from-writer > /v/shared/f; sleep 1000"
    writer = pb.Container(name="writer", image=WEB_REF, command=["sh", "-c", script],
                          volume_mounts=mounts)  # fmt: skip
    reader = pb.Container(name="reader", image=WEB_REF, command=["sleep", "1000"],
                          volume_mounts=[*mounts, pb.VolumeMount(name="info", mount_path="/info",
                                                                 read_only=True)])  # fmt: skip
    pod = h.pod("vols", writer, reader, volumes=volumes, share_process_namespace=True)
    pod.metadata.labels["app"] = "vols"
    await h.rt.start_pod(pod)
    await h.wait_status("default/vols", running, 30)
    code, out = await exec_out(h, "default/vols", "reader", "sh", "-c",
                               "cat /v/shared/f; cat /info/name; cat /info/labels; "
                               "grep ' /v/mem ' /proc/mounts; echo x > /v/host/f")  # fmt: skip
    assert code == 0, out
    assert "from-writer" in out and "vols" in out and 'app="vols"' in out
    assert "tmpfs" in out  # medium: Memory
    assert (host_dir / "f").read_text() == "x\n"
    # shareProcessNamespace: the reader sees the writer's sleep, and PID 1 is the pod's.
    _, ps = await exec_out(h, "default/vols", "reader", "ps", "-o", "pid,args")
    assert "echo from-writer" in ps or ps.count("sleep 1000") >= 2, ps
    assert ps.strip().splitlines()[1].split(None, 1)[1].startswith("sleep infinity"), ps
    code, out = await exec_out(h, "default/vols", "reader", "sh", "-c", "echo y > /info/name")
    assert code != 0  # read-only mount
    vol_dir = h.state_dir / "volumes"
    await h.rt.stop_pod("default/vols")
    assert not any(vol_dir.iterdir())
    assert str(vol_dir) not in Path("/proc/self/mountinfo").read_text()


async def test_init_containers_run_in_order_before_the_app(loaded: Harness) -> None:
    h = loaded
    vol = [pb.VolumeMount(name="work", mount_path="/work")]
    first = pb.Container(name="first", image=WEB_REF, volume_mounts=vol,
                         command=["sh", "-c", "echo one > /work/order"])  # fmt: skip
    second = pb.Container(name="second", image=WEB_REF, volume_mounts=vol,
                          command=["sh", "-c", "sleep 0.3; echo two >> /work/order"])  # fmt: skip
    app = pb.Container(name="app", image=WEB_REF, volume_mounts=vol,
                       command=["sh", "-c", "echo app >> /work/order; sleep 1000"])  # fmt: skip
    pod = h.pod("inits", app, init_containers=[first, second],
                volumes=[pb.Volume(name="work", kind="emptyDir")])  # fmt: skip
    await h.rt.start_pod(pod)
    first_status = h.rt.status("default/inits")
    assert first_status is not None and first_status.phase == "Pending"
    s = await h.wait_status("default/inits", lambda s: s.phase == "Running", 30)
    inits = [c for c in s.container_statuses if c.init]
    assert [(c.name, c.state, c.exit_code) for c in inits] == [
        ("first", "terminated", 0), ("second", "terminated", 0)]  # fmt: skip
    _, order = await exec_out(h, "default/inits", "app", "cat", "/work/order")
    assert order.split() == ["one", "two", "app"]


async def test_failing_init_container_fails_a_never_pod(loaded: Harness) -> None:
    h = loaded
    bad = pb.Container(name="bad", image=WEB_REF, command=["sh", "-c", "exit 7"])
    app = pb.Container(name="app", image=WEB_REF, command=["sleep", "1000"])
    await h.rt.start_pod(h.pod("badinit", app, init_containers=[bad], restart_policy="Never"))
    s = await h.wait_status("default/badinit", lambda s: s.phase == "Failed", 30)
    app_status = next(c for c in s.container_statuses if c.name == "app")
    assert app_status.state == "waiting" and app_status.reason == "PodInitializing"


async def test_memory_limit_is_a_cgroup_limit_on_the_host(loaded: Harness) -> None:
    h = loaded
    c = pb.Container(name="c", image=WEB_REF, command=["sleep", "1000"],
                     memory_limit_bytes=48 << 20, cpu_limit_millis=500)  # fmt: skip
    handle = await h.rt.start_pod(h.pod("limited", c))
    await h.wait_status("default/limited", running, 30)
    assert not h.rt.oci.runc.rootless, "the test host's cgroups are writable"
    cid = f"{handle.netns}-c"
    memory = Path(f"/sys/fs/cgroup/memory{h.rt.oci.cgroup_parent}/{cid}/memory.limit_in_bytes")
    cpu = Path(f"/sys/fs/cgroup/cpu{h.rt.oci.cgroup_parent}/{cid}/cpu.cfs_quota_us")
    unified = Path(f"/sys/fs/cgroup{h.rt.oci.cgroup_parent}/{cid}/memory.max")
    if memory.exists():  # cgroup v1 (or hybrid)
        assert int(memory.read_text()) == 48 << 20
        assert int(cpu.read_text()) == 50_000
    else:
        assert int(unified.read_text()) == 48 << 20
    await h.rt.stop_pod("default/limited")
    assert not memory.parent.exists() and not unified.parent.exists()
