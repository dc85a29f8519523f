"""Start many node agents from one pre-imported interpreter (a zygote), as `knemu up` does.

Each agent is a Python process that imports grpc, protobuf, aiohttp and knemu: about 0.6 s of
CPU and 50 MB of memory before it does anything.  Started one by one with ``ip netns exec
python -m knemu.cli agent``, 100 agents pay that 100 times, on a machine whose cores they
share, and each keeps a private copy of every imported module.  Instead, ``knemu up`` runs
this module once (``python -m knemu.cli.commands.forkserver``): it imports the agent, moves
every object it made into the garbage collector's permanent generation (``gc.freeze()``, so
collections in the children do not write to those pages and the kernel keeps them shared
copy-on-write), then forks one child per request.  The child enters its node's network
namespace the way ``ip netns exec`` does (setns CLONE_NEWNET, a private mount namespace whose
/sys shows that network namespace's devices), becomes a session leader with its output in its
log, and runs ``knemu agent`` as if it had been exec'd.

Requests come as one JSON list on stdin (``role``, ``netns``, ``argv`` for ``knemu.cli.main``,
``log``); one JSON line ``{"role": ..., "pid": ...}`` per child goes to stdout, then the fork
server exits and its children are inherited by init.  It is started with the cluster's marker
in its environment, which every child inherits, so ``knemu down`` recognises them.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import importlib
import json
import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

from knemu.errors import RemoteError

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_REC = 0x4000
MS_SLAVE = 1 << 19
MNT_DETACH = 2
FORK_TIMEOUT_S = 120.0
# what `knemu agent` imports: the command's module, then grpc, protobuf, aiohttp and the agent
PRELOADED = ("knemu.cli.commands.components", "knemu.node_agent.agent")
NO_FORKSERVER_ENV = "KNEMU_NO_FORKSERVER"  # =1: one interpreter per agent (ip netns exec)

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def enter_netns(name: str) -> None:
    """What ``ip netns exec NAME`` does before exec (iproute2 lib/namespace.c netns_switch)."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), f"setns {name}")
    finally:
        os.close(fd)
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    # Mounts made here (the agent's pod namespaces bind themselves under /run/netns from
    # their own `ip netns add`) must not propagate back, as with ip netns exec.
    _check(_libc.mount(b"", b"/", b"none", MS_SLAVE | MS_REC, None), "mount --make-rslave /")
    _libc.umount2(b"/sys", MNT_DETACH)  # may not be mounted; ip netns exec ignores that too
    _check(_libc.mount(name.encode(), b"/sys", b"sysfs", 0, None), "mount sysfs /sys")


def _child(request: dict[str, Any]) -> int:
    from knemu.cli import main

    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    try:
        enter_netns(str(request["netns"]))
        return main([str(a) for a in request["argv"]])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        return 1


def preload() -> None:
    """Import everything an agent imports, then freeze it (see the module docstring)."""
    for module in PRELOADED:
        importlib.import_module(module)

    gc.collect()
    gc.freeze()


def serve(requests: list[dict[str, Any]]) -> int:
    preload()
    for request in requests:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(request)
            finally:
                os._exit(code)
        print(json.dumps({"role": request["role"], "pid": pid}), flush=True)
    return 0


# ---- the `knemu up` side ---------------------------------------------------------------------


class ForkedProcess:
    """An agent the fork server started: not our child, so its state is read from /proc."""

    def __init__(self, pid: int, args: list[str]) -> None:
        self.pid = pid
        self.args = args  # the equivalent command line, for `knemu chaos` restarts

    def poll(self) -> int | None:
        """None while it runs; -1 once it has exited (a zombie or gone)."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return -1
        return None if stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X") else -1


def fork_agents(
    state_dir: Path, agents: dict[str, tuple[str, list[str], list[str]]], env: dict[str, str]
) -> dict[str, ForkedProcess]:
    """Start ``agents`` (role -> (netns, ``knemu.cli.main`` argv, equivalent command line))
    through one fork server; returns their processes by role."""
    requests = [
        {"role": role, "netns": netns, "argv": argv, "log": str(state_dir / f"{role}.log")}
        for role, (netns, argv, _) in agents.items()
    ]
    with open(state_dir / "forkserver.log", "ab") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "knemu.cli.commands.forkserver"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env,
            start_new_session=True,
        )  # fmt: skip
    try:
        out, _ = server.communicate(json.dumps(requests).encode(), timeout=FORK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        server.kill()
        out, _ = server.communicate()
    started = {}
    for line in out.decode().splitlines():
        reply = json.loads(line)
        role = str(reply["role"])
        started[role] = ForkedProcess(int(reply["pid"]), agents[role][2])
    if server.returncode != 0 or len(started) != len(agents):
        for proc in started.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        raise RemoteError(
            f"the agents' fork server failed (exit {server.returncode}); see "
            f"{state_dir}/forkserver.log, or set {NO_FORKSERVER_ENV}=1 to start each agent "
            "with its own interpreter"
        )
    return started


if __name__ == "__main__":
    sys.exit(serve(json.load(sys.stdin)))
