"""The OCI runtime ``config.json`` of one container, as a pure function.

``build_spec(ContainerRun)`` follows what a CRI runtime (containerd's CRI plugin, CRI-O) writes
for a Kubernetes container, so a container behaves as it would on a cluster:

* the process: ``command`` replaces the image's Entrypoint (and drops its Cmd), ``args``
  replaces Cmd (https://kubernetes.io/docs/tasks/inject-data-application/
  define-command-argument-container/#notes); the image's Env first, then the container's
  ``env`` (later wins); ``workingDir`` over the image's WorkingDir over ``/``;
  ``securityContext.runAsUser``/``runAsGroup`` over the image's ``User`` (a user name is
  looked up in the image's /etc/passwd, as runc's libcontainer/user does);
* namespaces: the pod's network namespace by path (the sandbox the agent made; CNI model),
  new mount, UTS (hostname = the pod's hostname) and PID namespaces, the pod's IPC namespace
  by path (its containers share System V IPC and POSIX message queues, as in Kubernetes); with
  ``shareProcessNamespace`` the pod's PID namespace by path too;
* mounts: the usual /proc, /dev, /dev/pts, /dev/shm, /dev/mqueue, /sys (read-only), then the
  pod's resolv.conf, hosts and hostname files (as the kubelet bind-mounts them), then volumes;
* Docker's default capability set, masked and read-only /proc paths (moby's
  ``oci/defaults.go``), so a container gets no more privilege than on Docker;
* ``resources.limits`` as ``linux.resources`` (memory bytes, CPU quota per 100 ms period).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from knemu.node_agent.runtime.images import BadImage, ImageConfig

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CPU_PERIOD_US = 100_000
# moby oci/caps/defaults.go DefaultCapabilities
DEFAULT_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)  # fmt: skip
MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware",
)  # fmt: skip
READONLY_PATHS = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)  # fmt: skip


@dataclass(frozen=True)
class BindMount:
    """A host path bind-mounted into the container (pod files and volumes)."""

    source: str
    destination: str
    read_only: bool = False


@dataclass(frozen=True)
class ContainerRun:
    """Everything ``build_spec`` needs; paths are the node's."""

    image: ImageConfig
    hostname: str
    netns_path: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # the container's env, already $(VAR)-expanded
    working_dir: str = ""
    run_as_user: int | None = None
    run_as_group: int | None = None
    pid_ns_path: str = ""  # shareProcessNamespace: the pod's PID namespace
    ipc_ns_path: str = ""  # the pod's IPC namespace ("" = the container's own)
    mounts: tuple[BindMount, ...] = ()
    memory_limit_bytes: int = 0
    cpu_limit_millis: int = 0
    cgroups_path: str = ""
    passwd: str = ""  # the image's /etc/passwd, for a user given by name
    group: str = ""  # the image's /etc/group
    terminal: bool = False
    annotations: Mapping[str, str] = field(default_factory=dict)


def process_args(image: ImageConfig, command: Sequence[str], args: Sequence[str]) -> list[str]:
    """The argv Kubernetes runs (the four cases of the command/args table)."""
    if command:
        return [*command, *args]
    if args:
        return [*image.entrypoint, *args]
    return [*image.entrypoint, *image.cmd]


def process_env(image: ImageConfig, hostname: str, env: Sequence[tuple[str, str]]) -> list[str]:
    """The image's Env, PATH if it has none, HOSTNAME, then the container's env (later wins)."""
    merged: dict[str, str] = {"PATH": DEFAULT_PATH}
    for item in image.env:
        name, _, value = item.partition("=")
        merged[name] = value
    merged["HOSTNAME"] = hostname
    for name, value in env:
        merged[name] = value
    merged.setdefault("HOME", "/root")
    return [f"{k}={v}" for k, v in merged.items()]


def _lookup(table: str, name: str) -> tuple[int, int] | None:
    """(id, gid-or-id) of ``name`` in a passwd(5) or group(5) text."""
    for line in table.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == name and fields[2].isdigit():
            gid = fields[3] if len(fields) > 3 and fields[3].isdigit() else fields[2]
            return int(fields[2]), int(gid)
    return None


def resolve_user(
    image_user: str, run_as_user: int | None, run_as_group: int | None, passwd: str, group: str
) -> tuple[int, int]:
    """(uid, gid) of the container process; BadImage when a name is not in the image."""
    user, _, grp = image_user.partition(":")
    uid, gid = 0, 0
    if user:
        if user.isdigit():
            uid = int(user)
            found = next((e for e in _passwd_by_uid(passwd) if e[0] == uid), None)
            gid = found[1] if found else 0
        else:
            entry = _lookup(passwd, user)
            if entry is None:
                raise BadImage(f"unable to find user {user}: no matching entries in passwd file")
            uid, gid = entry
    if grp:
        if grp.isdigit():
            gid = int(grp)
        else:
            entry = _lookup(group, grp)
            if entry is None:
                raise BadImage(f"unable to find group {grp}: no matching entries in group file")
            gid = entry[0]
    if run_as_user is not None:
        uid = run_as_user
        if run_as_group is None and not grp:
            found = next((e for e in _passwd_by_uid(passwd) if e[0] == uid), None)
            gid = found[1] if found else gid
    if run_as_group is not None:
        gid = run_as_group
    return uid, gid


def _passwd_by_uid(passwd: str) -> list[tuple[int, int]]:
    out = []
    for line in passwd.splitlines():
        f = line.split(":")
        if len(f) >= 4 and f[2].isdigit() and f[3].isdigit():
            out.append((int(f[2]), int(f[3])))
    return out


def _base_mounts() -> list[dict[str, Any]]:
    nosuid = ["nosuid", "noexec", "nodev"]
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": nosuid},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": [*nosuid, "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": nosuid},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": [*nosuid, "ro"]},
    ]  # fmt: skip


def _bind(m: BindMount) -> dict[str, Any]:
    options = ["rbind", "rprivate"] + (["ro"] if m.read_only else [])
    return {"destination": m.destination, "type": "bind", "source": m.source, "options": options}


def _resources(run: ContainerRun) -> dict[str, Any]:
    res: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    if run.memory_limit_bytes:
        res["memory"] = {"limit": run.memory_limit_bytes}
    if run.cpu_limit_millis:
        quota = max(1000, run.cpu_limit_millis * CPU_PERIOD_US // 1000)
        res["cpu"] = {"quota": quota, "period": CPU_PERIOD_US}
    return res


def build_spec(run: ContainerRun) -> dict[str, Any]:
    """The OCI runtime-spec ``config.json`` document for ``run``."""
    argv = process_args(run.image, run.command, run.args)
    if not argv:
        raise BadImage(
            "the container has no command: the image has neither Entrypoint nor Cmd; "
            "give the container a command"
        )
    uid, gid = resolve_user(
        run.image.user, run.run_as_user, run.run_as_group, run.passwd, run.group
    )
    caps = list(DEFAULT_CAPS)
    pid_ns: dict[str, str] = {"type": "pid"}
    if run.pid_ns_path:
        pid_ns["path"] = run.pid_ns_path
    linux: dict[str, Any] = {
        "namespaces": [
            pid_ns,
            {"type": "network", "path": run.netns_path},
            {"type": "ipc", **({"path": run.ipc_ns_path} if run.ipc_ns_path else {})},
            {"type": "uts"},
            {"type": "mount"},
        ],
        "resources": _resources(run),
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
    }
    if run.cgroups_path:
        linux["cgroupsPath"] = run.cgroups_path
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": run.terminal,
            "user": {"uid": uid, "gid": gid},
            "args": argv,
            "env": process_env(run.image, run.hostname, run.env),
            "cwd": run.working_dir or run.image.working_dir or "/",
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
            "noNewPrivileges": False,
        },
        "root": {"path": "rootfs", "readonly": False},
        "hostname": run.hostname,
        "mounts": _base_mounts() + [_bind(m) for m in run.mounts],
        "annotations": dict(run.annotations),
        "linux": linux,
    }
