"""``knemu up`` / ``knemu down``: a multi-node cluster on this machine, one namespace per node.

Layout (node-N numbering as in DESIGN.md "Address plan"; like Mininet's hosts on a switch)::

    root namespace                 knemu-<c>-sw               knemu-<c>-node-N
    knh-<c> 192.168.59.1/24 <--veth--> h0 --+ br0 +-- nN <--veth--> eth0 192.168.59.(10+N)/24
    api-server :6443 (REST)                                        knemu agent (node-N)
               :6444 (gRPC)                                        knemu0 10.244.N.1/24
    knemu dns  :5353, :9153                                        pods: knemu-<c>-node-N-*

The bridge lives in its own "switch" namespace rather than in the root namespace: the root
namespace's firewall (Docker sets ``FORWARD DROP`` and br_netfilter hands bridged frames to it)
then never sees node-to-node traffic, and nothing of the host's configuration is changed.
Node namespaces forward IP like a node does but have no default route, so cluster traffic
cannot leave the cluster's subnet, let alone the machine.  Every process is
``knemu apiserver|dns|agent --flags`` (agents under ``ip netns exec``), started in its own
session (process group), carrying the cluster's marker in its environment, and recorded with
its command line in ``<state>/state.json``; ``down`` stops them by pid, kills whatever still
runs inside the cluster's namespaces, and deletes the namespaces (which deletes their links).
``knemu chaos`` uses the same records to kill and
restart components (``kill_namespace_processes``, ``restart_component``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import knemu
from knemu.cli.commands import kubeconfig
from knemu.cli.commands.local_plan import (
    DEFAULT_NAME,
    DEFAULT_SUBNET,
    STATE_ROOT,
    Cluster,
)
from knemu.config import NETWORK_BACKENDS, PROXY_MODES
from knemu.errors import ConfigError, KnemuError, LocalError, RemoteError
from knemu.node_agent.runtime.runc import remove_cgroups

STOP_GRACE_S = 10.0
MARKER_ENV = "KNEMU_LOCAL_CLUSTER"

__all__ = ["Cluster", "down_add_arguments", "down_run", "up_add_arguments", "up_run"]


# -- what exists (I/O) -----------------------------------------------------------------------


def run_ip(cmd: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise LocalError(
            f"`{' '.join(cmd)}` failed: {proc.stderr.strip()}; local clusters need root "
            "(CAP_NET_ADMIN) and iproute2"
        )
    return proc


def list_namespaces(prefix: str) -> list[str]:
    out = run_ip(["ip", "netns", "list"], check=False).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return sorted(n for n in names if n.startswith(prefix))


def link_exists(name: str) -> bool:
    return run_ip(["ip", "link", "show", name], check=False).returncode == 0


def load_state(cluster: Cluster) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((cluster.state_dir / "state.json").read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"pids": {}}  # a torn state file still marks a stale cluster
    return data


def save_state(cluster: Cluster, state: dict[str, Any]) -> None:
    path = cluster.state_dir / "state.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)


def our_process_alive(pid: int, marker: str) -> bool:
    """True when ``pid`` runs and is ours: its environment carries our cluster marker."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{MARKER_ENV}={marker}".encode() in environ.split(b"\0")


def describe_leftovers(cluster: Cluster) -> tuple[bool, list[str]]:
    """(running, leftovers): whether the recorded processes all run, and what exists."""
    state = load_state(cluster)
    marker = str(cluster.state_dir)
    pids: dict[str, int] = (state or {}).get("pids", {})
    alive = {role: pid for role, pid in pids.items() if our_process_alive(pid, marker)}
    found = []
    if state is not None:
        found.append(f"state {cluster.state_dir}/state.json")
    dead = sorted(set(pids) - set(alive))
    if dead:
        found.append(f"dead processes: {', '.join(dead)}")
    found += [f"namespace {ns}" for ns in list_namespaces(cluster.prefix)]
    if link_exists(cluster.host_link):
        found.append(f"link {cluster.host_link}")
    running = bool(pids) and not dead and state is not None and state.get("complete", False)
    return running, found


# -- up -----------------------------------------------------------------------------------------


def up_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=3, help="number of nodes (default 3)")
    parser.add_argument("--proxy-mode", choices=PROXY_MODES, default="iptables")
    parser.add_argument(
        "--backend", choices=NETWORK_BACKENDS, default="vxlan",
        help="pod network backend: vxlan (flannel) or ipip (Calico IPIP, pod MTU 1480)",
    )  # fmt: skip
    parser.add_argument("--subnet", default=DEFAULT_SUBNET, help="underlay subnet of the nodes")
    parser.add_argument(
        "--mtu", type=int, default=1500, metavar="BYTES",
        help="MTU of the node network (default 1500; 9000 for jumbo frames as on cloud VPCs); "
        "pods get it less the backend's overhead (VXLAN 50)",
    )  # fmt: skip
    parser.add_argument(
        "--tun-offload", action="store_true",
        help="pods' TUNs with TCP segmentation/receive offload (experimental, see README)",
    )  # fmt: skip
    parser.add_argument("--name", default=DEFAULT_NAME, help="cluster name (1-8 of [a-z0-9])")
    parser.add_argument("--state-dir", default=STATE_ROOT, help="where state and logs go")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for Ready")
    kubeconfig_argument(parser)


def kubeconfig_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig",
        default=None,
        help="kubeconfig to add the cluster to (default $KUBECONFIG or ~/.kube/config)",
    )


def up_run(args: argparse.Namespace) -> int:
    try:
        cluster = Cluster(args.name, args.subnet, args.nodes, args.state_dir, args.mtu)
        if cluster.nodes < 1:
            raise ConfigError("--nodes must be at least 1")
        bring_up(cluster, args.proxy_mode, args.timeout, args.backend, args.tun_offload)
        config_path = Path(args.kubeconfig) if args.kubeconfig else kubeconfig.default_path()
        kubeconfig.merge_into(config_path, cluster.name, cluster.server_url)
        state = load_state(cluster) or {}
        save_state(cluster, {**state, "kubeconfig": str(config_path)})
    except KnemuError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    print(cluster.summary())
    print(kubeconfig.usage(config_path, cluster.name))
    return 0


def bring_up(
    cluster: Cluster,
    proxy_mode: str,
    timeout_s: float,
    backend: str = "vxlan",
    tun_offload: bool = False,
) -> None:
    running, found = describe_leftovers(cluster)
    if running:
        raise LocalError(
            f"cluster {cluster.name!r} is already up ({cluster.server_url}); "
            f"run `knemu down --name {cluster.name}` first to recreate it"
        )
    if found:
        raise LocalError(
            f"a stale cluster {cluster.name!r} was found ({'; '.join(found)}); "
            f"run `knemu down --name {cluster.name}` to clean it up"
        )
    check_subnet_free(cluster)
    cluster.state_dir.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"name": cluster.name, "subnet": str(cluster.net), "pids": {},
                             "argv": {}, "server": cluster.server_url}  # fmt: skip
    save_state(cluster, state)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for cmd in cluster.network_commands():
            run_ip(cmd)
        for role, config in cluster.component_configs(proxy_mode, backend, tun_offload).items():
            procs[role] = start_component(cluster, role, config)
            state["pids"][role] = procs[role].pid
            state["argv"][role] = procs[role].args
            save_state(cluster, state)
        wait_ready(cluster, timeout_s, procs)
    except BaseException:
        # Our own children first, by their Popen handles (they may not have exec'd yet).
        live = {p.pid: p for p in procs.values() if p.poll() is None}
        stop_processes(list(live), lambda pid: live[pid].poll() is None, signal_group=True)
        tear_down(cluster)
        raise
    state["complete"] = True
    save_state(cluster, state)


def check_subnet_free(cluster: Cluster) -> None:
    """Refuse a subnet this machine already routes: the host would lose that network."""
    routes = run_ip(["ip", "-4", "route", "show", "table", "main"], check=False).stdout
    taken = cluster.overlapping_route(routes)
    if taken:
        raise LocalError(
            f"--subnet {cluster.net} overlaps a network this machine already routes "
            f"({taken}); pick another, e.g. --subnet 192.168.200.0/24"
        )


def component_argv(kind: str, config: dict[str, Any]) -> list[str]:
    """``knemu apiserver|dns|agent --field-name value ...`` (the flags knemu.cli.commands.components
    derives from the config dataclasses)."""
    flags: list[str] = []
    for key, value in config.items():
        flag = key.replace("_", "-")
        if isinstance(value, bool):  # --flag / --no-flag (argparse.BooleanOptionalAction)
            flags.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            flags += (f"--{flag}", str(value))
    return [sys.executable, "-m", "knemu.cli", kind, "-v", *flags]


def start_component(cluster: Cluster, role: str, config: dict[str, Any]) -> subprocess.Popen[bytes]:
    kind = "agent" if role.startswith("node-") else role
    argv = component_argv(kind, config)
    if kind == "agent":
        argv = ["ip", "netns", "exec", cluster.node_ns(int(role.split("-")[1])), *argv]
    return launch(cluster.state_dir, role, argv)


def launch(state_dir: Path, role: str, argv: list[str]) -> subprocess.Popen[bytes]:
    """Start one component in its own session, output appended to ``<role>.log``."""
    log = open(state_dir / f"{role}.log", "ab")  # noqa: SIM115 - handed to the child
    with log:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, env=child_env(state_dir))  # fmt: skip


# -- hooks for `knemu chaos` on a local cluster (commands.chaos.LocalRuntime) ----------------------


def load_state_dir(state_dir: Path) -> dict[str, Any] | None:
    """The state of the cluster whose directory is ``state_dir`` (None: no such cluster)."""
    try:
        data: dict[str, Any] = json.loads((Path(state_dir) / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return data


def kill_namespace_processes(state_dir: Path, target: str) -> None:
    """SIGKILL everything inside node ``target``'s namespace and its pods' namespaces, as a
    machine that dies takes its pods with it.  Control-plane targets have no namespace."""
    for pids in _node_namespace_pids(state_dir, target):
        stop_processes(pids, pid_exists, signal_group=False, grace_s=0)


def signal_pod_processes(state_dir: Path, target: str, sig: int) -> None:
    """Send ``sig`` (SIGSTOP/SIGCONT: freeze/thaw) to the processes of node ``target``'s pods
    (pause, built-in workloads, runc containers), which run in sessions of their own."""
    for pids in _node_namespace_pids(state_dir, target, pods_only=True):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


def _node_namespace_pids(state_dir: Path, target: str, pods_only: bool = False) -> list[list[int]]:
    state = load_state_dir(state_dir)
    if state is None or not target.startswith("node-"):
        return []
    node_ns = f"knemu-{state['name']}-{target}"
    out = []
    for ns in list_namespaces(node_ns):
        if (ns == node_ns and not pods_only) or re.fullmatch(
            re.escape(node_ns) + r"-[0-9a-f]{8}", ns
        ):
            pids = run_ip(["ip", "netns", "pids", ns], check=False).stdout.split()
            out.append([int(p) for p in pids])
    return out


def restart_component(state_dir: Path, target: str) -> int:
    """Start ``target`` again with the command line it was first started with (after the old
    process, if it still runs, has stopped); the new pid is recorded for ``knemu down``."""
    state = load_state_dir(state_dir)
    if state is None or target not in state.get("argv", {}):
        raise LocalError(f"{target} is not a component of the cluster in {state_dir}")
    old = state["pids"].get(target)
    if old and our_process_alive(old, str(state_dir)):  # e.g. still draining after SIGTERM
        stop_processes([old], lambda pid: our_process_alive(pid, str(state_dir)), True)
    proc = launch(Path(state_dir), target, state["argv"][target])
    state["pids"][target] = proc.pid
    tmp = Path(state_dir) / "state.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(Path(state_dir) / "state.json")
    return proc.pid


def child_env(state_dir: Path) -> dict[str, str]:
    """Children import knemu from wherever this process did (PYTHONPATH=src in a tree) and
    carry a marker naming the cluster, so ``down`` only ever signals its own processes."""
    env = dict(os.environ)
    here = str(Path(knemu.__file__).resolve().parents[1])  # the directory holding knemu/
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH", "")) if p)
    env[MARKER_ENV] = str(state_dir)
    return env


def wait_ready(
    cluster: Cluster, timeout_s: float, procs: dict[str, subprocess.Popen[bytes]]
) -> None:
    deadline = time.monotonic() + timeout_s
    ready: list[str] = []
    while time.monotonic() < deadline:
        for role, proc in procs.items():
            # poll(), not the environment marker: a child that has not exec'd yet still
            # shows this process's environment.
            if proc.poll() is not None:
                raise RemoteError(
                    f"{role} exited during start-up; see "
                    f"{cluster.state_dir}/{role}.log:\n{log_tail(cluster, role)}"
                )
        ready = ready_nodes(cluster.server_url)
        # Ready and serving its HTTP API: the agent got past its data-plane set-up.
        if len(ready) >= cluster.nodes and all(agent_healthy(cluster, n) for n in ready):
            return
        time.sleep(0.2)  # polling the api-server: a condition with a deadline
    raise RemoteError(
        f"only {len(ready)} of {cluster.nodes} nodes became Ready within "
        f"{timeout_s:.0f} s; see the logs in {cluster.state_dir}"
    )


def agent_healthy(cluster: Cluster, node: str) -> bool:
    url = f"{cluster.server_url}/api/v1/nodes/{node}/proxy/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.read().strip() == b"ok")
    except OSError:
        return False


def ready_nodes(server_url: str) -> list[str]:
    try:
        with urllib.request.urlopen(f"{server_url}/api/v1/nodes", timeout=2) as resp:
            body = json.loads(resp.read())
    except (OSError, ValueError, urllib.error.URLError):
        return []
    names = []
    for node in body.get("items", []):
        conds = node.get("status", {}).get("conditions", [])
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds):
            names.append(node["metadata"]["name"])
    return names


def log_tail(cluster: Cluster, role: str, lines: int = 15) -> str:
    try:
        text = (cluster.state_dir / f"{role}.log").read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


# -- down ---------------------------------------------------------------------------------------


def down_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default=DEFAULT_NAME, help="cluster name")
    parser.add_argument("--state-dir", default=STATE_ROOT, help="where state and logs are")
    kubeconfig_argument(parser)


def down_run(args: argparse.Namespace) -> int:
    try:
        cluster = Cluster(args.name, DEFAULT_SUBNET, 0, args.state_dir)
        recorded = (load_state(cluster) or {}).get("kubeconfig")
        removed = tear_down(cluster)
        config_path = Path(args.kubeconfig or recorded or kubeconfig.default_path())
        if kubeconfig.remove_from(config_path, cluster.name):
            removed.append(f"context {kubeconfig.entry_name(cluster.name)} in {config_path}")
    except KnemuError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    if removed:
        print(f"cluster {cluster.name} removed: {', '.join(removed)}")
    else:
        print(f"no cluster {cluster.name!r} found under {cluster.state_dir}; nothing to do")
    return 0


def tear_down(cluster: Cluster) -> list[str]:
    """Stop every process, delete every namespace and link, remove the state; say what went."""
    _, found = describe_leftovers(cluster)
    state = load_state(cluster) or {}
    marker = str(cluster.state_dir)
    pids = [p for p in state.get("pids", {}).values() if our_process_alive(p, marker)]
    stop_processes(pids, lambda pid: our_process_alive(pid, marker), signal_group=True)
    for ns in list_namespaces(cluster.prefix):
        # Pods (pause, workloads) an agent could not stop: everything inside is ours.
        inside = [int(p) for p in run_ip(["ip", "netns", "pids", ns], check=False).stdout.split()]
        stop_processes(inside, pid_exists, signal_group=False, grace_s=2.0)
        run_ip(["ip", "netns", "delete", ns], check=False)
    if link_exists(cluster.host_link):
        run_ip(["ip", "link", "delete", cluster.host_link], check=False)
    # Cgroups of runc containers whose agent was killed; a process SIGKILLed above may take
    # a moment to leave its cgroup, so try again (bounded).
    deadline = time.monotonic() + STOP_GRACE_S
    while not remove_cgroups(f"/knemu/{cluster.prefix}*", kill=True):
        if time.monotonic() > deadline:
            found.append(f"cgroups /knemu/{cluster.prefix}* (still busy)")
            break
        time.sleep(0.05)
    if cluster.state_dir.exists():
        shutil.rmtree(cluster.state_dir, ignore_errors=True)
    return found


def pid_exists(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def stop_processes(
    pids: list[int], alive: Callable[[int], bool], signal_group: bool, grace_s: float = STOP_GRACE_S
) -> None:
    """SIGTERM (the agents drain their pods), then SIGKILL what is left after ``grace_s``."""

    def send(sig: int) -> None:
        for pid in pids:
            try:
                if signal_group:
                    os.killpg(pid, sig)  # each component leads its own process group
                else:
                    os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    send(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    send(signal.SIGKILL)
    _reap(pids)


def _reap(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
