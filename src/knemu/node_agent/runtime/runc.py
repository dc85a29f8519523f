"""The thin adapter that drives runc (Debian's ``runc`` package) for one container.

A run is ``runc run --bundle B ID`` in the foreground: runc stays the parent of the
container's init, passes its stdin/stdout/stderr through (no terminal), forwards the signals
it gets and exits with the container's status, so the agent supervises it like any process
and the container's output lands in the same log file as a built-in workload's.  Stopping
uses ``runc kill`` (the container's init is PID 1 of its own PID namespace, which ignores
signals it has no handler for, so SIGKILL is sent after the grace period), then
``runc delete --force``.  Exec is ``runc exec`` (the container's user, env and cwd).

Cgroups: where the cgroup filesystem is writable (the agent on the host, ``knemu up``) runc
creates ``/knemu/<node>/<container>`` in every hierarchy and ``resources.limits`` are
enforced.  Inside a compose node container Docker mounts /sys/fs/cgroup read-only, so runc
runs with ``--rootless=true``: as root with no user namespace this changes only one thing,
cgroup errors are ignored (libcontainer's rootless cgroup manager) -- but only for a
container that names no cgroupsPath and sets no limits, so the launcher leaves both out
there; the container stays in the node container's cgroup (whose limits still hold), and
the agent says in an event that its own limits are not enforced (``cgroups_writable``).
Under ``knemu up`` the agent's mount namespace (made by ``ip netns exec``) has no cgroup
mounts at all; ``cgroup_mount_plan`` mounts the hierarchies there first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knemu.errors import PodRuntimeError
from knemu.node_agent.runtime.image_store import run_tool

# Pods' processes run at a lower CPU priority than the agent, as a real node reserves CPU for
# the kubelet above its pods (kube-reserved,
# https://kubernetes.io/docs/tasks/administer-cluster/reserve-compute-resources/): a burst of
# pods starting on a crowded machine must not delay the node's heartbeats past its grace.
POD_NICE_PREFIX = ("nice", "-n", "10")

CGROUP_ROOT = Path("/sys/fs/cgroup")
START_TIMEOUT_S = 30.0


def cgroup_mount_plan(mountinfo: str, proc_cgroup: str) -> list[list[str]]:
    """``mount`` commands giving this mount namespace the cgroup hierarchies it is in, or []
    when it has cgroup mounts already.  ``ip netns exec`` (how ``knemu up`` starts agents)
    mounts a fresh /sys in a private mount namespace, without /sys/fs/cgroup's mounts, and
    runc refuses to run without them ("no cgroup mount found in mountinfo").  The mounts are
    made in the agent's own namespace, so they vanish with it and no other process sees them.
    ``proc_cgroup`` is /proc/self/cgroup: ``ID:controllers:path`` per hierarchy (cgroups(7))."""
    for line in mountinfo.splitlines():
        fstype = line.split(" - ", 1)[1].split()[0] if " - " in line else ""
        if fstype in ("cgroup", "cgroup2"):
            return []
    v1 = []
    unified = False
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            unified = True
        elif parts[1]:
            v1.append(parts[1])
    root = str(CGROUP_ROOT)
    if not v1:
        return [["mount", "-t", "cgroup2", "cgroup2", root]] if unified else []
    plan = [["mount", "-t", "tmpfs", "-o", "mode=755", "cgroup", root]]
    for controllers in v1:
        name = controllers.removeprefix("name=")
        options = f"none,{controllers}" if controllers.startswith("name=") else controllers
        plan.append(["mkdir", "-p", f"{root}/{name}"])
        plan.append(["mount", "-t", "cgroup", "-o", options, "cgroup", f"{root}/{name}"])
    if unified:
        plan += [["mkdir", "-p", f"{root}/unified"],
                 ["mount", "-t", "cgroup2", "cgroup2", f"{root}/unified"]]  # fmt: skip
    return plan


def cgroups_writable(root: Path = CGROUP_ROOT) -> bool:
    """True when runc can create cgroups: the memory hierarchy (v1) or the unified one (v2)
    is mounted read-write."""
    for path in (root / "memory", root):
        if path.is_dir():
            try:
                return not os.statvfs(path).f_flag & os.ST_RDONLY
            except OSError:
                return False
    return False


def remove_cgroups(parent: str, root: Path = CGROUP_ROOT, kill: bool = False) -> bool:
    """rmdir the (empty) cgroup directories under ``parent`` (a glob such as
    ``/knemu/knemu-kt1-*``) in every hierarchy, deepest first, then ``/knemu`` if no node
    uses it any more; a cgroup still holding a process stays (EBUSY) unless ``kill``, which
    SIGKILLs the processes left in them first (``knemu down``: they are the cluster's).
    True when nothing under ``parent`` is left."""
    try:
        hierarchies = [p for p in root.iterdir() if p.is_dir()]
    except OSError:
        return True
    left = False
    for hierarchy in hierarchies:
        for top in hierarchy.glob(parent.strip("/")):
            for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
                if kill:
                    _kill_procs(Path(dirpath))
                try:
                    os.rmdir(dirpath)
                except FileNotFoundError:
                    pass
                except OSError:
                    left = True
        with contextlib.suppress(OSError):
            os.rmdir(hierarchy / parent.strip("/").split("/")[0])
    return not left


def _kill_procs(cgroup: Path) -> None:
    """SIGKILL a cgroup's processes and thaw it: ``runc kill --all`` freezes the cgroup while
    it signals, so a runc killed in between leaves processes frozen that cannot die."""
    with contextlib.suppress(OSError):
        for pid in (cgroup / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(pid), signal.SIGKILL)
    for name, thawed in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
        with contextlib.suppress(OSError):
            (cgroup / name).write_text(thawed)


@dataclass(frozen=True)
class RuncConfig:
    state_root: Path  # runc --root: container state
    bundles: Path  # one bundle directory per container
    rootless: bool  # cgroups read-only: ignore cgroup errors (limits not enforced)
    binary: str = "runc"

    def argv(self, *args: str) -> list[str]:
        flags = ["--rootless=true"] if self.rootless else []
        return [self.binary, "--root", str(self.state_root), *flags, *args]


class OciContainer:
    """One container's bundle and runc state."""

    def __init__(
        self,
        config: RuncConfig,
        container_id: str,
        spec: dict[str, Any],
        rootfs: Path,
        files: dict[str, str] | None = None,
    ) -> None:
        self.config, self.id = config, container_id
        self.bundle = config.bundles / container_id
        self.spec, self.rootfs, self.files = spec, rootfs, dict(files or {})

    async def start(self, **kwargs: Any) -> asyncio.subprocess.Process:
        """One run: a fresh bundle, then ``runc run`` (stdio as given); returns once the
        container's process runs (or runc has exited)."""
        await self.write_bundle(self.spec, self.rootfs, self.files)
        proc = await self.run(**kwargs)
        await self.wait_started(proc)
        return proc

    async def wait_started(self, proc: asyncio.subprocess.Process) -> bool:
        """Wait (bounded) until runc has started the container: its state directory exists
        and ``exec.fifo``, which runc removes at ``start``, is gone.  False if runc exited."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        state = self.config.state_root / self.id
        while proc.returncode is None and loop.time() < deadline:
            if (state / "state.json").exists() and not (state / "exec.fifo").exists():
                return True
            await asyncio.sleep(0.005)  # polling runc's state files, bounded by the deadline
        return False

    async def write_bundle(self, spec: dict[str, Any], rootfs: Path, files: dict[str, str]) -> None:
        """A fresh bundle: a copy of the image's rootfs (a restarted container starts from the
        image again, as on Kubernetes), config.json and small pod files (hostname)."""
        await self.delete()
        self.bundle.mkdir(parents=True)
        await run_tool("cp", "-a", "--reflink=auto", str(rootfs), str(self.bundle / "rootfs"),
                       what=f"copy the root filesystem of container {self.id}")  # fmt: skip
        for name, text in files.items():
            (self.bundle / name).write_text(text)
        (self.bundle / "config.json").write_text(json.dumps(spec, indent=1))

    async def run(self, **kwargs: Any) -> asyncio.subprocess.Process:
        """``runc run`` in the foreground; stdio as given (log file, stdin pipe)."""
        self.config.state_root.mkdir(parents=True, exist_ok=True)
        try:
            return await asyncio.create_subprocess_exec(
                *POD_NICE_PREFIX, *self.config.argv("run", "--bundle", str(self.bundle), self.id),
                start_new_session=True, **kwargs,
            )  # fmt: skip
        except FileNotFoundError:
            raise PodRuntimeError(
                "runc is not installed on this node; install the Debian package runc"
            ) from None

    async def exec(self, argv: list[str], **kwargs: Any) -> asyncio.subprocess.Process:
        """``runc exec``: a process in the running container (its namespaces, user, env)."""
        return await asyncio.create_subprocess_exec(
            *self.config.argv("exec", self.id, *argv), start_new_session=True, **kwargs
        )

    async def kill(self, sig: int) -> None:
        """Signal the container's init.  SIGKILL of the init of a PID namespace kills every
        process in it; with a shared PID namespace, ``delete --force`` kills the rest.  No
        ``--all``: runc freezes the cgroup for it, and a runc killed meanwhile would leave the
        container frozen and unkillable (``remove_cgroups`` thaws such leftovers)."""
        args = ["kill", self.id, signal.Signals(sig).name]
        with contextlib.suppress(PodRuntimeError):
            await run_tool(*self.config.argv(*args), what=f"signal container {self.id}",
                           timeout_s=10)  # fmt: skip

    async def delete(self) -> None:
        """Forget the container (runc state, its cgroup) and remove its bundle."""
        if (self.config.state_root / self.id).exists():
            with contextlib.suppress(PodRuntimeError):
                await run_tool(*self.config.argv("delete", "--force", self.id),
                               what=f"delete container {self.id}", timeout_s=10)  # fmt: skip
        await asyncio.to_thread(shutil.rmtree, self.bundle, True)


async def list_containers(config: RuncConfig) -> list[str]:
    """Ids of the containers runc knows under ``config.state_root``."""
    if not config.state_root.is_dir():
        return []
    try:
        out = await run_tool(*config.argv("list", "--format", "json"), what="runc list",
                             timeout_s=10)  # fmt: skip
    except PodRuntimeError:
        return []
    try:
        entries = json.loads(out) or []
    except ValueError:
        return []
    return [str(e.get("id")) for e in entries if isinstance(e, dict) and e.get("id")]
