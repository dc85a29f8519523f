"""The privileges and launch commands of containers without a real image (pure part)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from knemu.node_agent.runtime import isolation
from knemu.node_agent.runtime.oci_spec import BindMount
from knemu.proto import knemu_pb2 as pb


def test_default_is_nobody_without_capabilities() -> None:
    iso = isolation.isolation_for(pb.Container(name="c"))
    assert (iso.uid, iso.gid, iso.caps, iso.no_new_privs) == (65534, 65534, (), True)
    argv = isolation.setpriv_argv(iso)
    assert argv[:5] == ["setpriv", "--reuid", "65534", "--regid", "65534"]
    assert "--inh-caps=-all" in argv and "--bounding-set=-all" in argv
    assert "--no-new-privs" in argv and argv[-1] == "--"


@pytest.mark.parametrize(
    ("context", "uid", "caps", "nnp"),
    [
        ({"run_as_user": 0}, 0, set(isolation.DEFAULT_ROOT_CAPS), False),
        ({"run_as_user": 0, "allow_privilege_escalation": False}, 0,
         set(isolation.DEFAULT_ROOT_CAPS), True),
        ({"run_as_user": 1000, "capabilities_add": ["NET_ADMIN", "CAP_NET_RAW"]}, 1000,
         {"net_admin", "net_raw"}, True),
    ],
)  # fmt: skip
def test_security_context(context: dict[str, object], uid: int, caps: set[str], nnp: bool) -> None:
    iso = isolation.isolation_for(pb.Container(name="c", **context))  # type: ignore[arg-type]
    assert (iso.uid, set(iso.caps), iso.no_new_privs) == (uid, caps, nnp)
    argv = isolation.setpriv_argv(iso)
    assert any(a.startswith("--ambient-caps=") for a in argv) == (uid != 0 and bool(caps))


def test_privileged_keeps_everything() -> None:
    iso = isolation.isolation_for(pb.Container(name="c", privileged=True, run_as_user=1000))
    assert iso.privileged and isolation.setpriv_argv(iso) == []


def test_init_script_and_mounts() -> None:
    iso = isolation.isolation_for(pb.Container(name="c"))
    script = isolation.init_script(iso, [BindMount("/state/v o l", "/tmp/app", True)])
    lines = script.splitlines()
    # The source is opened before /tmp is covered, then bound through its fd.
    assert lines.index("exec 3<'/state/v o l'") < next(
        i for i, line in enumerate(lines) if "tmpfs /tmp" in line
    )
    assert "mount --bind /proc/self/fd/3 /tmp/app" in lines
    assert "mount -o remount,bind,ro /tmp/app" in lines and lines[-1] == 'exec "$@"'
    assert "ip_unprivileged_port_start" in script
    host = isolation.isolation_for(pb.Container(name="c"), host_network=True)
    assert "ip_unprivileged_port_start" not in isolation.init_script(host)  # the node's netns
    too_many = [BindMount(f"/s{i}", f"/tmp/{i}") for i in range(isolation.MAX_MOUNTS + 1)]
    with pytest.raises(ValueError, match="at most"):
        isolation.init_script(iso, too_many)


def test_mount_paths_must_exist_on_the_node_or_be_under_tmp() -> None:
    assert isolation.mount_problem(BindMount("/s", "/tmp/x/y"), exists=False) == ""
    assert isolation.mount_problem(BindMount("/s", "/srv"), exists=True) == ""
    assert "does not exist on the node" in isolation.mount_problem(
        BindMount("/s", "/etc/app"), exists=False
    )


def test_token_directory_needs_not_exist_on_the_node() -> None:
    token = BindMount("/state/tok", "/var/run/secrets/kubernetes.io/serviceaccount", True)
    assert isolation.mount_problem(token, exists=False) == ""
    script = isolation.init_script(isolation.isolation_for(pb.Container(name="c")), [token])
    lines = script.splitlines()
    overlay = next(i for i, line in enumerate(lines) if "mount -t overlay" in line)
    # made in the overlay, before the container's /tmp hides its upper layer
    assert overlay < lines.index(
        f"mount -t tmpfs -o mode=1777,nosuid,nodev,size={isolation.TMP_SIZE} tmpfs /tmp"
    )
    assert "mount --bind /proc/self/fd/3 /var/run/secrets/kubernetes.io/serviceaccount" in lines


@pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root")
def test_token_directory_is_mounted_read_only_without_touching_the_nodes_run(
    tmp_path: Path,
) -> None:
    source = tmp_path / "tok"
    source.mkdir()
    (source / "token").write_text("jwt")
    dest = "/var/run/secrets/kubernetes.io/serviceaccount"
    before = sorted(os.listdir("/run"))
    iso = isolation.isolation_for(pb.Container(name="c", privileged=True), host_network=True)
    script = isolation.init_script(iso, [BindMount(str(source), dest, True)])
    check = f"cat {dest}/token; touch {dest}/x 2>/dev/null && echo writable || echo read-only"
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "slave", "sh", "-c", script, "knemu-init",
         "sh", "-c", check],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert (proc.returncode, proc.stdout) == (0, "jwtread-only\n"), proc.stderr
    assert sorted(os.listdir("/run")) == before  # nothing made in the node's /run
