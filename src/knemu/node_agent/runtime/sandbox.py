"""Pod sandboxes: the pause container, a named network namespace and a TUN eth0.

Theory of operation (DESIGN.md "Data plane"; seed 000, the pause container):

1. ``/etc/netns/<netns>/resolv.conf`` and ``hosts`` are written first: ``ip netns exec``
   bind-mounts every file of that directory over ``/etc`` for the processes it starts, which
   is how each container sees its pod's DNS settings (ip-netns(8)).
2. The pause process is ``unshare --net --uts sh -c 'hostname NAME; ...; exec sleep infinity'``.
   ``unshare`` execs without forking, so the pid we spawned is the holder of the new network
   and UTS namespaces.  It prints ``ready`` once the hostname is set, so we never poll.
3. ``ip netns attach <netns> <pid>`` names the namespace (names are global on the machine,
   hence ``<prefix>-<node>-<uid[:8]>``).
4. The TUN device is created in the node's namespace (the agent keeps its fd), moved into the
   pod namespace by pid, renamed ``eth0``, given the MTU (1450: VXLAN overhead) and the address
   ``POD_IP/32`` with ``default dev eth0``.  A TUN is point-to-point (no ARP, no MAC), so a
   /32 plus a device route is all the pod needs: every packet not for itself leaves through
   the fd, like Calico's /32 + ``default via 169.254.1.1`` on a veth.
5. IPv6 is switched off inside the pod (the emulated data plane is IPv4 only), so the TUN does
   not carry router solicitations or MLD reports.

``knemu up`` starts each agent under ``ip netns exec NODE``, which gives it a private (slave)
mount namespace: a netns name bound there would be invisible to everyone else (``ip netns
exec`` from a shell fails with "Invalid argument") and to the next agent.  So names are bound
(``ip netns attach``/``delete``/``pids``) in a mount namespace of the master peer group of our
/run/netns (found through /proc/*/mountinfo); the mount propagates to our slave copy, so both
sides see it.  Leftovers are also found by the pause pid recorded in the state dir.

Teardown closes the TUN fd (which deletes the device), kills every process in the namespace,
deletes the name and the ``/etc/netns`` directory.  A hostNetwork pod (``host_sandbox``) has
no namespace of its own: its name points at the node's, so teardown kills the processes of its
UTS namespace instead and never "every process in the namespace" (that would be the node).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

from knemu.errors import PodRuntimeError
from knemu.node_agent.dataplane import tun

NETNS_RUN_DIR = Path("/run/netns")
NETNS_ETC_DIR = Path("/etc/netns")
READY_TIMEOUT_S = 10.0
KILL_WAIT_S = 5.0  # how long teardown waits for SIGKILLed processes to exit
HOSTNAME_MAX = 63  # the kubelet truncates pod hostnames to 63 characters

# $1 = hostname.  IPv6 writes may fail on kernels without IPv6: ignored on purpose.
_PAUSE_SCRIPT = (
    'hostname "$1" || exit 1; '
    "for f in all default; do echo 1 > /proc/sys/net/ipv6/conf/$f/disable_ipv6; done "
    "2>/dev/null; echo ready; exec sleep infinity"
)
# A hostNetwork pod's pause: its own UTS namespace only; the node's IPv6 settings stay as they are.
_HOST_PAUSE_SCRIPT = 'hostname "$1" || exit 1; echo ready; exec sleep infinity'


@dataclass
class Sandbox:
    netns: str
    hostname: str
    pause_pid: int
    tun_fd: int
    tun_name: str  # the name it was created with in the node namespace ("eth0" in the pod)
    pod_ip: str
    pause: asyncio.subprocess.Process | None = field(default=None, repr=False)
    start_ticks: int = 0  # the pause process's start time (/proc/PID/stat), against pid reuse
    host_network: bool = False  # shares the node's network namespace (sandbox_host)

    @property
    def netns_path(self) -> str:
        """A path to the network namespace that stays valid while the pause process lives."""
        return f"/proc/{self.pause_pid}/ns/net"


def netns_name(prefix: str, node: str, uid: str) -> str:
    """``<prefix>-<node>-<uid[:8]>``: unique even when several nodes share one machine."""
    return f"{prefix}-{node}-{uid.replace('-', '')[:8]}"


def tun_name_for(uid: str) -> str:
    """A 15-character-safe TUN name in the node namespace ("kn" + 11 hex digits)."""
    return "kn" + hashlib.sha1(uid.encode()).hexdigest()[:11]


def pod_hostname(name: str, hostname: str = "") -> str:
    """spec.hostname or the pod name, truncated like the kubelet (63 characters)."""
    return (hostname or name)[:HOSTNAME_MAX].rstrip("-.") or "pod"


def _run_netns_tags(mountinfo: str) -> dict[str, str] | None:
    """Propagation tags (``shared``, ``master``) of the /run/netns mount in a mountinfo text
    (proc(5): optional fields sit between the mount options and the " - " separator)."""
    for line in mountinfo.splitlines():
        head = line.split(" - ", 1)[0].split()
        if len(head) >= 6 and head[4] == str(NETNS_RUN_DIR):
            return dict(f.split(":", 1) for f in head[6:] if ":" in f)
    return None


_global_mnt: list[tuple[str, int]] = []  # cache: (path of a global mount ns, its inode)


def _global_mount_prefix() -> list[str]:
    """``nsenter --mount=<ns>`` when our /run/netns is a slave (we run under ``ip netns
    exec``): <ns> is a mount namespace of its master peer group, where a netns name we bind
    is seen by everyone, us included.  [] when our own names are already global."""
    if _global_mnt:
        path, ino = _global_mnt[0]
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == ino:
                return ["nsenter", f"--mount={path}", "--"]
        _global_mnt.clear()
    try:
        own = _run_netns_tags(Path("/proc/self/mountinfo").read_text())
    except OSError:
        return []
    master = (own or {}).get("master")
    if master is None:
        return []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            tags = _run_netns_tags(Path(f"/proc/{entry}/mountinfo").read_text())
            if tags is not None and tags.get("shared") == master and "master" not in tags:
                path = f"/proc/{entry}/ns/mnt"
                _global_mnt.append((path, os.stat(path).st_ino))
                return ["nsenter", f"--mount={path}", "--"]
    return []


async def run_netns_cmd(*argv: str, what: str) -> str:
    """``ip netns <argv>`` in the mount namespace where netns names are global (falls back to
    our own, where only the agent and its children see the name)."""
    prefix = _global_mount_prefix()
    if prefix:
        with contextlib.suppress(PodRuntimeError):
            return await run_cmd(*prefix, "ip", "netns", *argv, what=what)
        _global_mnt.clear()  # that process may have exited: look again next time
    return await run_cmd("ip", "netns", *argv, what=what)


async def run_cmd(*argv: str, stdin: str | None = None, what: str = "") -> str:
    """Run a short command; raise PodRuntimeError naming it and its stderr on failure."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    if proc.returncode != 0:
        raise PodRuntimeError(
            f"{what or argv[0]}: `{' '.join(argv)}` exited {proc.returncode}: "
            f"{err.decode(errors='replace').strip()}; check that the agent runs as root "
            "with iproute2 installed"
        )
    return out.decode(errors="replace")


def write_etc_files(netns: str, resolv_conf: str, hosts: str) -> Path:
    """Write /etc/netns/<netns>/{resolv.conf,hosts}; returns the directory."""
    directory = NETNS_ETC_DIR / netns
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "resolv.conf").write_text(resolv_conf)
    (directory / "hosts").write_text(hosts)
    return directory


async def create_sandbox(
    *,
    netns: str,
    hostname: str,
    tun_name: str,
    pod_ip: str,
    mtu: int,
    resolv_conf: str,
    hosts: str,
    offload: bool = False,
) -> Sandbox:
    """Build the whole sandbox; on any failure everything built so far is removed again.

    Raises PodRuntimeError (also for OS errors such as a missing /dev/net/tun)."""
    sandbox = Sandbox(netns, hostname, 0, -1, tun_name, pod_ip)
    try:
        write_etc_files(netns, resolv_conf, hosts)
        sandbox.pause = await start_pause(hostname)
        sandbox.pause_pid = sandbox.pause.pid
        sandbox.start_ticks = process_start_ticks(sandbox.pause_pid) or 0
        await run_netns_cmd("attach", netns, str(sandbox.pause_pid), what="netns attach")
        sandbox.tun_fd = tun.open_tun(tun_name, offload)  # TSO: see dataplane.offload
        await run_cmd(
            "ip", "link", "set", tun_name, "netns", str(sandbox.pause_pid), what="move TUN"
        )
        await run_cmd("ip", "-n", netns, "-batch", "-", stdin=_eth0_batch(tun_name, pod_ip, mtu))
    except BaseException as exc:
        await destroy_sandbox(sandbox)
        if isinstance(exc, OSError):
            raise PodRuntimeError(f"cannot build the sandbox {netns}: {exc}") from exc
        raise
    return sandbox


def _eth0_batch(tun_name: str, pod_ip: str, mtu: int) -> str:
    return "\n".join(
        [
            "link set lo up",
            f"link set {tun_name} name eth0",
            f"link set eth0 mtu {mtu}",
            f"addr add {pod_ip}/32 dev eth0",
            "link set eth0 up",
            f"route add default dev eth0 src {pod_ip}",
            "",
        ]
    )


async def start_pause(hostname: str, host_network: bool = False) -> asyncio.subprocess.Process:
    """The pause process: new UTS (and, unless ``host_network``, network) namespaces."""
    unshare = ["unshare", "--uts"] if host_network else ["unshare", "--net", "--uts"]
    script = _HOST_PAUSE_SCRIPT if host_network else _PAUSE_SCRIPT
    proc = await asyncio.create_subprocess_exec(
        *unshare, "sh", "-c", script, "pause", hostname,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # survives the agent's process group; adopt_or_clean cleans up
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT_S)
    except TimeoutError:
        line = b""
    if line.strip() != b"ready":
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        err = await proc.stderr.read()
        await proc.wait()
        raise PodRuntimeError(
            f"pause process for hostname {hostname!r} did not start: "
            f"{err.decode(errors='replace').strip() or 'no output'}; the agent needs root "
            "(CAP_SYS_ADMIN) and util-linux unshare"
        )
    return proc


async def destroy_sandbox(sandbox: Sandbox) -> None:
    """Close the TUN, kill every process in the namespace, delete the name and files."""
    if sandbox.tun_fd >= 0:
        tun.close_tun(sandbox.tun_fd)
        sandbox.tun_fd = -1
    if sandbox.pause_pid:
        await wait_gone(kill_netns_processes(sandbox.pause_pid, sandbox.start_ticks))
    await clean_netns(sandbox.netns)
    if sandbox.pause is not None:
        with contextlib.suppress(ProcessLookupError):
            sandbox.pause.kill()
        await sandbox.pause.wait()
        sandbox.pause = None


async def clean_netns(netns: str) -> None:
    """Remove a (possibly leftover) pod namespace: its processes, its name, its /etc files."""
    if (NETNS_RUN_DIR / netns).exists():
        # A hostNetwork pod's name points at the node's own namespace: its processes are
        # the node's (the agent's among them), so only the name goes.
        own = _same_namespace(str(NETNS_RUN_DIR / netns), "/proc/self/ns/net")
        for pid in [] if own else await netns_pids(netns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(PodRuntimeError):
            await run_netns_cmd("delete", netns, what="netns delete")
    shutil.rmtree(NETNS_ETC_DIR / netns, ignore_errors=True)


async def netns_pids(netns: str) -> list[int]:
    try:
        out = await run_netns_cmd("pids", netns, what="netns pids")
    except PodRuntimeError:
        return []
    return [int(word) for word in out.split() if word.isdigit()]


def list_netns(prefix: str) -> list[str]:
    """Named namespaces (and leftover /etc/netns directories) whose names start with prefix."""
    names: set[str] = set()
    for directory in (NETNS_RUN_DIR, NETNS_ETC_DIR):
        with contextlib.suppress(OSError):
            names.update(p.name for p in directory.iterdir() if p.name.startswith(prefix))
    return sorted(names)


def process_start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks); None if the pid is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _same_namespace(a: str, b: str) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def pod_namespace_kind(pause_pid: int) -> str | None:
    """Which of the pause process's namespaces tells its pod's processes apart: ``net``, or
    ``uts`` for a hostNetwork pod (whose network namespace is the agent's own); None when
    both are the agent's (nothing may be killed) or the process is gone."""
    for kind in ("net", "uts"):
        if not os.path.exists(f"/proc/{pause_pid}/ns/{kind}"):
            return None
        if not _same_namespace(f"/proc/{pause_pid}/ns/{kind}", f"/proc/self/ns/{kind}"):
            return kind
    return None


def kill_netns_processes(pause_pid: int, start_ticks: int) -> list[int]:
    """SIGKILL every process in the pod namespace of ``pause_pid``; returns their pids.

    Works without the namespace's name (which may be bound in another mount namespace, see
    the module docstring) by comparing /proc/*/ns/net (/proc/*/ns/uts for a hostNetwork pod).
    Does nothing if ``pause_pid`` is no longer the process that started at ``start_ticks`` or
    shares both namespaces with the agent.
    """
    if start_ticks and process_start_ticks(pause_pid) != start_ticks:
        return []
    kind = pod_namespace_kind(pause_pid)
    if kind is None:
        return []
    try:
        target = os.stat(f"/proc/{pause_pid}/ns/{kind}")
    except OSError:
        return []
    killed = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/{kind}")
            if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                os.kill(int(entry), signal.SIGKILL)
                killed.append(int(entry))
        except OSError:
            continue
    return killed


async def wait_gone(pids: list[int], timeout_s: float = KILL_WAIT_S) -> bool:
    """Wait (bounded) until SIGKILLed processes have exited; zombies count as gone."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while any(_running(pid) for pid in pids):
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)  # exit after SIGKILL takes a scheduler tick or two
    return True


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def load_records(path: Path) -> dict[str, tuple[int, int]]:
    """netns name -> (pause pid, start ticks) of the sandboxes a previous run left."""
    try:
        data = json.loads(path.read_text())
        return {str(k): (int(v[0]), int(v[1])) for k, v in data.items()}
    except (OSError, ValueError, TypeError, AttributeError, IndexError):
        return {}


def save_records(path: Path, records: dict[str, tuple[int, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({k: list(v) for k, v in records.items()}))
    os.replace(tmp, path)
