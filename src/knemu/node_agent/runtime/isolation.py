"""Pods without a real image (built-in workloads, commands from the node's filesystem): their
own namespaces and no more of the node's privileges than their securityContext asks for.

A container's process is started as::

    nsenter --uts=<pause>/ns/uts ip netns exec <netns>      the pod's hostname and network
      nsenter --pid=<pod PID namespace>                     the pod's processes only
        sh -c INIT knemu-init setpriv ... -- ARGV           a fresh /proc and /tmp, then drop

``ip netns exec`` gives every process its own mount namespace (a slave of the node's, so
nothing mounted in it leaks back); INIT mounts a /proc of the pod's PID namespace and a private
/tmp there, lets unprivileged users bind low ports and open ICMP sockets in the pod's own
network namespace (as Docker does), and execs ``setpriv``.  The ServiceAccount token directory
(/var/run/secrets/kubernetes.io/serviceaccount) is made, when the node has none, in an overlay
of /run on a tmpfs in that mount namespace only: the node's /run is never written.  The PID
namespace is held by a per-pod ``sleep`` (``OciLauncher.pod_pid_namespace``), so a container
is never PID 1 and SIGTERM reaches it (a PID 1 without a handler ignores it).  ``kubectl exec``
enters the same namespaces with ``nsenter --target`` and the same ``setpriv``.

Privileges (https://kubernetes.io/docs/tasks/configure-pod-container/security-context/):
by default uid/gid 65534 (nobody), no capabilities, no_new_privs.  ``runAsUser`` picks the uid
(``runAsUser: 0``: root with the container runtimes' default capabilities), ``capabilities.add``
adds capabilities (ambient, so that they work for a non-root uid too),
``allowPrivilegeEscalation: false`` sets no_new_privs for root as well, and ``privileged``
keeps everything.  Pure functions; the runtime runs the argv they build.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from knemu.node_agent.runtime.oci_spec import BindMount
from knemu.proto import knemu_pb2 as pb

NOBODY = 65534
# containerd's and Docker's default capability set for root in a container.
DEFAULT_ROOT_CAPS = (
    "chown", "dac_override", "fsetid", "fowner", "mknod", "net_raw", "setgid", "setuid",
    "setfcap", "setpcap", "net_bind_service", "sys_chroot", "kill", "audit_write",
)  # fmt: skip
TMP_SIZE = "64m"
MAX_MOUNTS = 7  # shell file descriptors 3-9 hold the volume sources while /tmp is mounted
SECRETS_DIRS = (PurePosixPath("/var/run/secrets"), PurePosixPath("/run/secrets"))


def _in_secrets(destination: str) -> bool:
    return any(PurePosixPath(destination).is_relative_to(d) for d in SECRETS_DIRS)


@dataclass(frozen=True)
class Isolation:
    uid: int
    gid: int
    caps: tuple[str, ...]  # lower-case capability names, without cap_
    no_new_privs: bool
    privileged: bool = False
    host_network: bool = False


def isolation_for(spec: pb.Container, host_network: bool = False) -> Isolation:
    """What ``spec``'s securityContext grants a container without a real image."""
    added = tuple(sorted({c.lower().removeprefix("cap_") for c in spec.capabilities_add}))
    if spec.privileged:
        return Isolation(0, 0, (), False, privileged=True, host_network=host_network)
    uid = spec.run_as_user if spec.HasField("run_as_user") else NOBODY
    gid = spec.run_as_group if spec.HasField("run_as_group") else (NOBODY if uid else 0)
    caps = tuple(sorted(set(DEFAULT_ROOT_CAPS) | set(added))) if uid == 0 else added
    escalation = spec.allow_privilege_escalation if spec.HasField(
        "allow_privilege_escalation"
    ) else uid == 0  # fmt: skip
    return Isolation(uid, gid, caps, not escalation, host_network=host_network)


def setpriv_argv(iso: Isolation) -> list[str]:
    """``setpriv`` (util-linux) dropping to ``iso``; [] for a privileged container."""
    if iso.privileged:
        return []
    caps = "".join(f",+{c}" for c in iso.caps)
    argv = ["setpriv", "--reuid", str(iso.uid), "--regid", str(iso.gid), "--clear-groups",
            f"--inh-caps=-all{caps}", f"--bounding-set=-all{caps}"]  # fmt: skip
    if iso.uid != 0 and iso.caps:
        argv.append(f"--ambient-caps={caps[1:]}")
    if iso.no_new_privs:
        argv.append("--no-new-privs")
    return [*argv, "--"]


def mount_problem(mount: BindMount, exists: bool) -> str:
    """Why a volumeMount cannot be made for a container without a real image, or ''.  It sees
    the node's files, so a mountPath must be a directory the node has, or be under /tmp (its
    own tmpfs, where the directory is made)."""
    if exists or PurePosixPath(mount.destination).is_relative_to("/tmp"):
        return ""
    if _in_secrets(mount.destination):
        return ""  # made in the container's own overlay of /run (init_script)
    return (
        f"mountPath {mount.destination} does not exist on the node: a container without a "
        "real image sees the node's filesystem; mount under /tmp, or run a real image"
    )


def init_script(iso: Isolation, mounts: Sequence[BindMount] = ()) -> str:
    """What runs as root in the container's new mount namespace before privileges drop:
    /proc, /tmp, the volumeMounts (bind mounts, read-only ones remounted so)."""
    if len(mounts) > MAX_MOUNTS:
        raise ValueError(f"at most {MAX_MOUNTS} volumeMounts for a container without an image")
    # Each source is opened before the private /tmp hides it (a node state directory may be
    # under /tmp) and bound through its /proc/self/fd link, as runc binds by fd.
    opens = " ".join(f"{3 + i}<{shlex.quote(m.source)}" for i, m in enumerate(mounts))
    lines = ["set -e", *([f"exec {opens}"] if mounts else []),
             "mount -t proc -o nosuid,nodev,noexec proc /proc"]  # fmt: skip
    secrets = [shlex.quote(m.destination) for m in mounts if _in_secrets(m.destination)]
    if secrets:
        # /run seen through an overlay whose upper layer is a tmpfs that the container's own
        # /tmp then hides: the directories are made there, not in the node's /run.
        missing = " || ".join(f"[ ! -d {dst} ]" for dst in secrets)
        lines += [
            f"if {missing}; then",
            "  run=$(readlink -f /run)",
            "  mount -t tmpfs -o mode=0755,size=1m tmpfs /tmp",
            "  mkdir /tmp/upper /tmp/work",
            '  mount -t overlay -o "lowerdir=$run,upperdir=/tmp/upper,workdir=/tmp/work" '
            'overlay "$run"',
            *(f"  mkdir -p {dst}" for dst in secrets),
            "fi",
        ]
    lines.append(f"mount -t tmpfs -o mode=1777,nosuid,nodev,size={TMP_SIZE} tmpfs /tmp")
    for i, m in enumerate(mounts):
        dst = shlex.quote(m.destination)
        if PurePosixPath(m.destination).is_relative_to("/tmp"):
            lines.append(f"mkdir -p {dst}")
        lines.append(f"mount --bind /proc/self/fd/{3 + i} {dst}")
        if m.read_only:
            lines.append(f"mount -o remount,bind,ro {dst}")
    lines += [f"exec {3 + i}<&-" for i in range(len(mounts))]
    lines += stdio_lines(iso)
    if not iso.host_network:  # the pod's own network namespace, not the node's
        lines += [
            "echo 0 > /proc/sys/net/ipv4/ip_unprivileged_port_start",
            "echo '0 2147483647' > /proc/sys/net/ipv4/ping_group_range",
        ]
    return "\n".join([*lines, 'exec "$@"'])


def stdio_lines(iso: Isolation) -> list[str]:
    """Give the container's user its stdin/stdout/stderr (pipes and the log file the agent
    opened as root), so that reopening /dev/stdout works, as runc's fixStdioPermissions does;
    devices (/dev/null, a tty) are left alone."""
    if iso.privileged or iso.uid == 0:
        return []
    return [
        f"for fd in 0 1 2; do [ -c /proc/self/fd/$fd ] || "
        f"chown {iso.uid}:{iso.gid} /proc/self/fd/$fd 2>/dev/null || true; done"
    ]


def run_argv(
    iso: Isolation,
    pause_pid: int,
    netns: str,
    pid_ns_path: str,
    argv: list[str],
    mounts: Sequence[BindMount] = (),
) -> list[str]:
    """The command line that starts ``argv`` as a container of the pod."""
    ipc = pid_ns_path.rsplit("/", 1)[0] + "/ipc"  # the holder's own: the pod's IPC namespace
    enter_pid = ["nsenter", f"--pid={pid_ns_path}", f"--ipc={ipc}"] if pid_ns_path else [
        "unshare", "--pid", "--fork", "--kill-child",
    ]  # fmt: skip
    return [
        "nsenter", f"--uts=/proc/{pause_pid}/ns/uts", "ip", "netns", "exec", netns,
        *enter_pid, "sh", "-c", init_script(iso, mounts), "knemu-init", *setpriv_argv(iso), *argv,
    ]  # fmt: skip


def exec_argv(iso: Isolation, target_pid: int, argv: list[str]) -> list[str]:
    """``kubectl exec``: ``argv`` in the namespaces of the container whose process is
    ``target_pid``, with its privileges."""
    fix = stdio_lines(iso)
    wrap = ["sh", "-c", "\n".join([*fix, 'exec "$@"']), "knemu-exec"] if fix else []
    return [
        "nsenter", f"--target={target_pid}", "--mount", "--pid", "--uts", "--net", "--ipc",
        *wrap, *setpriv_argv(iso), *argv,
    ]  # fmt: skip
