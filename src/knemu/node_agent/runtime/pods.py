"""PodRuntime: the kubelet and CNI roles of the node agent.

For every pod bound to this node the runtime allocates an address from the node's podCIDR
(``ipam``), builds the sandbox (``sandbox``: pause process, named netns, TUN eth0 whose fd the
agent attaches to its router), writes resolv.conf/hosts per dnsPolicy (``resolv``), and runs
each container as a supervised process (``containers``, ``probes``).  Status changes go to
``on_status`` (a ``PodStatus`` maps onto pb.PodStatusReport); noteworthy things go to
``on_event(pod_key, type, reason, message)`` as the kubelet's events do.

Public API (H7's agent calls it)::

    rt = PodRuntime(config, node_name, pod_cidr, gateway_ip, on_status, on_event)
    handle = await rt.start_pod(pod)     # pb.Pod -> PodHandle; raises KnemuError (events sent)
    await rt.stop_pod("ns/name")         # closes handle.tun_fd: detach it from the loop first
    await rt.stop_all()
    rt.pods() -> list[PodHandle]
    proc = await rt.exec("ns/name", "container", argv, stdin=False)
    rt.log_path("ns/name", "container") -> Path
    rt.runner("ns/name", "container") -> Runner   # attach: its process, stdin and log
    await rt.adopt_or_clean(pods)        # agent restart: clean leftovers, re-create ``pods``
    rt.status("ns/name") -> PodStatus | None

State under ``config.state_dir``: ``ipam-<node>.json`` (addresses by pod uid),
``sandboxes-<node>.json`` (netns -> pause pid, for cleaning up after a crash) and
``pods/<ns>_<name>_<uid8>/<container>.log``.  A hostNetwork pod (``host_sandbox``) has no
address and no TUN: its handle carries the node's IP and ``tun_fd`` -1.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from knemu.config import DNS_SERVICE_IP, AgentConfig
from knemu.errors import KnemuError, LocalError, NotFound
from knemu.node_agent.cni import ipam, resolv
from knemu.node_agent.runtime import downward, host_sandbox, init_containers, sandbox
from knemu.node_agent.runtime.containers import (
    BACKOFF_INITIAL_S,
    BACKOFF_MAX_S,
    ContainerCore,
    ContainerStatus,
    PodContext,
    Runner,
    container_env,
    spawn_in_pod,
)
from knemu.node_agent.runtime.host_sandbox import NetworkPlan
from knemu.node_agent.runtime.oci_launch import ImageStep, OciLauncher, PodPaths, spec_env
from knemu.node_agent.runtime.volumes import PodVolumes
from knemu.proto import knemu_pb2 as pb

__all__ = ["ContainerStatus", "PodHandle", "PodRuntime", "PodStatus", "pod_phase"]

DEFAULT_GRACE_S = 30  # terminationGracePeriodSeconds default
NODE_RESOLV_CONF = Path("/etc/resolv.conf")


@dataclass(frozen=True)
class PodStatus:
    namespace: str
    name: str
    uid: str
    node_name: str
    phase: str  # Pending | Running | Succeeded | Failed
    pod_ip: str = ""
    ready: bool = False
    container_statuses: tuple[ContainerStatus, ...] = field(default_factory=tuple)
    reason: str = ""
    message: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def to_report(self) -> pb.PodStatusReport:
        return pb.PodStatusReport(
            namespace=self.namespace, name=self.name, uid=self.uid, node_name=self.node_name,
            phase=self.phase, pod_ip=self.pod_ip, ready=self.ready, reason=self.reason,
            message=self.message,
            container_statuses=[
                pb.ContainerStatus(
                    name=c.name, ready=c.ready, restart_count=c.restart_count, state=c.state,
                    reason=c.reason, message=c.message, exit_code=c.exit_code,
                    started_at=c.started_at, image=c.image, has_last_state=c.last is not None,
                    last_exit_code=c.last[0] if c.last else 0,
                    last_reason=c.last[1] if c.last else "",
                    last_started_at=c.last[2] if c.last else "",
                    last_finished_at=c.last[3] if c.last else "", init=c.init,
                )
                for c in self.container_statuses
            ],
        )  # fmt: skip


@dataclass
class PodHandle:
    key: str  # "namespace/name"
    uid: str
    ip: str
    # non-blocking; IPv4 packets (with tun_offload each after a virtio-net header); closed by
    # stop_pod
    tun_fd: int
    tun_name: str  # name the TUN had in the node netns; it is "eth0" inside the pod
    netns: str  # named netns: /run/netns/<netns>
    pause_pid: int
    host_network: bool = False  # the node's namespace: ip is the node's, no TUN (tun_fd -1)


def pod_phase(statuses: Iterable[ContainerStatus], restart_policy: str) -> str:
    """The pod phase from its containers, as the kubelet's getPhase computes it."""
    waiting = running = stopped = succeeded = 0
    for cs in statuses:
        if cs.state == "running":
            running += 1
        elif cs.state == "terminated":
            stopped += 1
            succeeded += cs.exit_code == 0
        elif cs.restart_count > 0 or cs.reason == "CrashLoopBackOff":
            stopped += 1  # waiting to restart after having run: counts as stopped
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped == 0 or restart_policy in ("Always", ""):
        return "Running" if stopped else "Pending"
    if succeeded == stopped:
        return "Succeeded"
    return "Failed" if restart_policy == "Never" else "Running"


@dataclass
class _Pod:
    pod: pb.Pod
    handle: PodHandle
    sandbox: sandbox.Sandbox
    runners: list[Runner] = field(default_factory=list)
    init_runners: list[Runner] = field(default_factory=list)
    init_task: asyncio.Task[None] | None = None
    last: PodStatus | None = None
    stopping: bool = False


class PodRuntime:
    def __init__(
        self,
        config: AgentConfig,
        node_name: str,
        pod_cidr: str,
        gateway_ip: str,
        on_status: Callable[[PodStatus], None],
        on_event: Callable[[str, str, str, str], None],
        *,
        backoff_initial_s: float = BACKOFF_INITIAL_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        max_grace_s: float = 10.0,
        node_ip: str = "",
    ) -> None:
        self.config, self.node_name, self.node_ip = config, node_name, node_ip
        self.pod_cidr, self.gateway_ip = pod_cidr, gateway_ip
        self._on_status, self._on_event = on_status, on_event
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._max_grace_s = max_grace_s  # emulator: do not wait 30 s for a stubborn process
        self._state_dir = Path(config.state_dir)
        self._ipam_path = self._state_dir / f"ipam-{node_name}.json"
        self.ipam = ipam.load(self._ipam_path, pod_cidr, gateway_ip)
        # Sandboxes by netns name, persisted so the next run can clean them even when their
        # names are bound in a mount namespace it cannot see (sandbox module docstring).
        self._records_path = self._state_dir / f"sandboxes-{node_name}.json"
        self._records = sandbox.load_records(self._records_path)
        self._pods: dict[str, _Pod] = {}
        # Images in <state_dir>/images run with runc (runtime.oci_launch).
        self.oci = OciLauncher(self._state_dir, f"{config.netns_prefix}-{node_name}", node_name)
        self.volumes = PodVolumes(self._state_dir / "volumes")
        self._locks: dict[str, asyncio.Lock] = {}
        try:
            self._node_resolv = resolv.parse_resolv_conf(NODE_RESOLV_CONF.read_text())
        except OSError:
            self._node_resolv = resolv.ResolvConf()

    # ---- queries ------------------------------------------------------------------------

    def pods(self) -> list[PodHandle]:
        return [p.handle for p in self._pods.values()]

    def status(self, key: str) -> PodStatus | None:
        p = self._pods.get(key)
        return self._compute(p) if p else None

    def log_path(self, key: str, container: str) -> Path:
        p = self._pods.get(key)
        if p is None:
            raise NotFound(f"pod {key} is not running on node {self.node_name}; check its node")
        return (
            self._log_dir(key, p.handle.uid) / f"{container or self._runner(p, '').spec.name}.log"
        )

    def _log_dir(self, key: str, uid: str) -> Path:
        return self._state_dir / "pods" / f"{key.replace('/', '_')}_{uid.replace('-', '')[:8]}"

    def runner(self, key: str, container: str) -> Runner:
        """The container's runner (attach reaches its process, stdin and log through it)."""
        p = self._pods.get(key)
        if p is None:
            raise NotFound(f"pod {key} is not running on node {self.node_name}; check its node")
        return self._runner(p, container)

    def container_pids(self, key: str) -> dict[str, int]:
        """Each running container's process id (the root of its process tree), by name."""
        p = self._pods.get(key)
        runners = p.runners if p else []
        return {r.spec.name: r.process.pid for r in runners
                if r.process is not None and r.process.returncode is None}  # fmt: skip

    def _runner(self, p: _Pod, container: str) -> Runner:
        for r in p.runners + p.init_runners:
            if r.spec.name == container or not container:
                return r
        names = ", ".join(r.spec.name for r in p.runners + p.init_runners)
        raise NotFound(f"container {container!r} is not in pod {p.handle.key}; it has: {names}")

    # ---- lifecycle ----------------------------------------------------------------------

    async def start_pod(self, pod: pb.Pod) -> PodHandle:
        """Create the pod's sandbox and start its containers; returns once they are launched."""
        key = f"{pod.metadata.namespace}/{pod.metadata.name}"
        async with self._lock(key):
            existing = self._pods.get(key)
            if existing is not None and existing.handle.uid == pod.metadata.uid:
                return existing.handle
            if existing is not None:  # same name, new uid: the old pod is gone
                await self._stop(existing)
            try:  # IPAM exhaustion too: a clear event and a Pending pod (seed 002)
                plan = host_sandbox.plan_network(pod, self.node_name, self.node_ip)
                ip = plan.pod_ip or self._allocate(key, pod.metadata.uid)
                box = await self._create_sandbox(pod, plan, ip)
            except KnemuError as exc:
                self._release(pod.metadata.uid)
                self._fail(pod, "FailedCreatePodSandBox", exc.message)
                raise
            handle = PodHandle(
                key, pod.metadata.uid, ip, box.tun_fd, box.tun_name, box.netns, box.pause_pid,
                box.host_network,
            )  # fmt: skip
            p = _Pod(pod, handle, box)
            self._pods[key] = p
            self._records[box.netns] = (box.pause_pid, box.start_ticks)
            sandbox.save_records(self._records_path, self._records)
            await self._start_containers(p)
            self._report(p)
            return handle

    def _allocate(self, key: str, uid: str) -> str:
        ip = self.ipam.allocate(key, uid)
        ipam.save(self.ipam, self._ipam_path)
        return ip

    def _release(self, uid: str) -> None:
        if self.ipam.release(uid) is not None:
            ipam.save(self.ipam, self._ipam_path)

    def _fail(self, pod: pb.Pod, reason: str, message: str) -> None:
        key = f"{pod.metadata.namespace}/{pod.metadata.name}"
        self._on_event(key, "Warning", reason, message)
        self._on_status(
            PodStatus(
                pod.metadata.namespace, pod.metadata.name, pod.metadata.uid, self.node_name,
                "Pending", reason=reason, message=message,
            )
        )  # fmt: skip

    async def _create_sandbox(self, pod: pb.Pod, plan: NetworkPlan, ip: str) -> sandbox.Sandbox:
        meta, hostname = pod.metadata, plan.hostname
        dns_config = resolv.DnsConfig(
            tuple(pod.dns_config.nameservers),
            tuple(pod.dns_config.searches),
            tuple((o.name, o.value) for o in pod.dns_config.options),
        )
        try:
            conf = resolv.pod_resolv_conf(
                namespace=meta.namespace, dns_policy=pod.dns_policy, dns_config=dns_config,
                host_network=pod.host_network, node_resolv=self._node_resolv,
                cluster_domain=self.config.cluster_domain, cluster_dns=DNS_SERVICE_IP,
            )  # fmt: skip
        except ValueError as exc:
            raise LocalError(f"pod {meta.namespace}/{meta.name}: {exc}") from None
        netns = sandbox.netns_name(self.config.netns_prefix, self.node_name, meta.uid)
        if plan.host_network:
            return await host_sandbox.create_host_sandbox(
                netns=netns, hostname=hostname, node_ip=ip, resolv_conf=conf.render()
            )
        hosts = resolv.pod_hosts_file(
            pod_ip=ip, hostname=hostname, subdomain=pod.subdomain, namespace=meta.namespace,
            cluster_domain=self.config.cluster_domain,
        )  # fmt: skip
        return await sandbox.create_sandbox(
            netns=netns, hostname=hostname, tun_name=sandbox.tun_name_for(meta.uid), pod_ip=ip,
            mtu=self.config.pod_mtu_or_default, resolv_conf=conf.render(), hosts=hosts,
            offload=self.config.tun_offload,
        )  # fmt: skip

    async def _pod_paths(self, p: _Pod) -> PodPaths:
        """What runc containers need of the pod: namespaces, files, volumes (made here)."""
        volumes, error = {}, ""
        try:
            volumes = await asyncio.to_thread(
                self.volumes.prepare, p.pod, p.handle.netns, p.handle.ip
            )
        except (KnemuError, OSError) as exc:
            error = exc.message if isinstance(exc, KnemuError) else str(exc)
            self._on_event(p.handle.key, "Warning", "FailedMount", error)
        pid_ns = await self.oci.pod_pid_namespace(p.handle) if p.pod.share_process_namespace else ""
        return PodPaths(
            p.handle.key, p.handle.netns, f"/proc/{p.handle.pause_pid}/ns/net",
            p.sandbox.hostname, str(sandbox.NETNS_ETC_DIR / p.handle.netns), pid_ns,
            volumes, error,
        )  # fmt: skip

    async def _start_containers(self, p: _Pod) -> None:
        meta = p.pod.metadata
        ctx = PodContext(p.handle.key, meta.name, p.handle.netns, p.handle.pause_pid, p.handle.ip)
        log_dir = self._log_dir(p.handle.key, p.handle.uid)
        paths = await self._pod_paths(p)
        policy = p.pod.restart_policy or "Always"
        for specs, runners, pol in ((p.pod.init_containers, p.init_runners,
                                     init_containers.init_restart_policy(policy)),
                                    (p.pod.containers, p.runners, policy)):  # fmt: skip
            for original in specs:
                spec, config_error = self._with_env_refs(p, original)
                core = ContainerCore(spec.name, pol, self._backoff[0], self._backoff[1])
                if p.pod.init_containers and runners is p.runners:
                    core.reason = "PodInitializing"
                runners.append(Runner(
                    spec, ctx, core, container_env(spec, p.sandbox.hostname),
                    log_dir / f"{spec.name}.log",
                    on_change=functools.partial(self._report, p),
                    on_event=functools.partial(self._on_event, p.handle.key),
                    image_step=ImageStep(self.oci, spec, paths, spec_env(spec), config_error),
                ))  # fmt: skip
        if p.init_runners:
            p.init_task = asyncio.get_running_loop().create_task(
                self._init_then_start(p), name=f"init containers {p.handle.key}"
            )
        else:
            for runner in p.runners:
                runner.start()

    def _with_env_refs(self, p: _Pod, spec: pb.Container) -> tuple[pb.Container, str]:
        """The spec with its fieldRef env values filled in, or the spec and why they cannot
        be (the container then waits with CreateContainerConfigError)."""
        try:
            fields = downward.PodFields(p.pod, p.handle.ip, self.node_ip)
            return downward.resolve_env(spec, fields), ""
        except KnemuError as exc:
            return spec, exc.message

    async def _init_then_start(self, p: _Pod) -> None:
        if await init_containers.run_in_order(p.init_runners):
            for runner in p.runners:
                runner.start()
        self._report(p)

    def _compute(self, p: _Pod) -> PodStatus:
        inits = tuple(init_containers.as_init(r.status()) for r in p.init_runners)
        statuses = tuple(r.status() for r in p.runners)
        policy = p.pod.restart_policy or "Always"
        phase = init_containers.init_phase(inits, policy) or pod_phase(statuses, policy)
        meta = p.pod.metadata
        return PodStatus(
            meta.namespace, meta.name, meta.uid, self.node_name, phase, p.handle.ip,
            ready=phase == "Running" and bool(statuses) and all(s.ready for s in statuses),
            container_statuses=statuses + inits,
        )  # fmt: skip

    def _report(self, p: _Pod) -> None:
        if p.stopping:
            return
        status = self._compute(p)
        if status != p.last:
            p.last = status
            self._on_status(status)

    async def stop_pod(self, key: str) -> None:
        """Stop containers (SIGTERM, grace, SIGKILL), tear the sandbox down, free the IP."""
        async with self._lock(key):
            p = self._pods.get(key)
            if p is not None:
                await self._stop(p)

    async def _stop(self, p: _Pod) -> None:
        p.stopping = True
        grace = min(float(p.pod.termination_grace_period_s or DEFAULT_GRACE_S), self._max_grace_s)
        if p.init_task is not None:
            p.init_task.cancel()
        try:
            await asyncio.gather(*(r.stop(grace) for r in p.init_runners + p.runners))
        finally:
            await sandbox.destroy_sandbox(p.sandbox)
            await asyncio.to_thread(self.volumes.remove, p.handle.netns)
            self._pods.pop(p.handle.key, None)
            self._records.pop(p.handle.netns, None)
            sandbox.save_records(self._records_path, self._records)
            self._release(p.handle.uid)
            shutil.rmtree(self._log_dir(p.handle.key, p.handle.uid), ignore_errors=True)

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop_pod(key) for key in list(self._pods)))
        await self.oci.clean(set())  # runc state, bundles and cgroups of this node

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    # ---- exec and restarts --------------------------------------------------------------

    async def exec(
        self, key: str, container: str, argv: list[str], stdin: bool
    ) -> asyncio.subprocess.Process:
        """Start ``argv`` in the container's context (kubectl exec); stdout/stderr are pipes,
        stdin a pipe when asked for.  The caller waits for the process."""
        p = self._pods.get(key)
        if p is None:
            raise NotFound(f"pod {key} is not running on node {self.node_name}; check its node")
        runner = self._runner(p, container)
        if runner.core.state != "running":
            raise LocalError(
                f"cannot exec in container {runner.spec.name} of pod {key}: it is "
                f"{runner.core.state} ({runner.core.reason}); wait until it runs"
            )
        if not argv:
            raise LocalError("exec needs a command; give one after --")
        if runner.oci is not None:  # runc exec: the container's namespaces, root and user
            return await runner.oci.exec(
                argv, stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
        return await spawn_in_pod(
            runner.pod, argv, runner.env, runner.spec.working_dir or None,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip

    async def adopt_or_clean(self, pods: Iterable[pb.Pod]) -> list[PodHandle]:
        """After an agent restart: remove every sandbox a previous run of this node left
        (processes, netns, /etc/netns files, logs), keep the IPs of ``pods`` and re-create
        them.  Pods that fail to start are skipped (their events and status were sent)."""
        wanted = list(pods)
        prefix = f"{self.config.netns_prefix}-{self.node_name}-"
        mine = {p.handle.netns for p in self._pods.values()}
        for name, (pid, ticks) in list(self._records.items()):
            if name not in mine:
                sandbox.kill_netns_processes(pid, ticks)
                await sandbox.clean_netns(name)
                del self._records[name]
        sandbox.save_records(self._records_path, self._records)
        for name in sandbox.list_netns(prefix):
            suffix = name[len(prefix) :]
            if name not in mine and len(suffix) == 8 and "-" not in suffix:
                await sandbox.clean_netns(name)
        await self.oci.clean(mine)  # containers of pods a previous run left
        await asyncio.to_thread(self.volumes.remove_all_except, mine)
        keep = {p.metadata.uid for p in wanted} | {p.handle.uid for p in self._pods.values()}
        if self.ipam.retain(keep):
            ipam.save(self.ipam, self._ipam_path)
        self._clean_logs(keep)
        handles = []
        for pod in wanted:
            with contextlib.suppress(KnemuError):
                handles.append(await self.start_pod(pod))
        return handles

    def _clean_logs(self, uids: set[str]) -> None:
        short = {u.replace("-", "")[:8] for u in uids}
        with contextlib.suppress(OSError):
            for d in (self._state_dir / "pods").iterdir():
                if d.name.rsplit("_", 1)[-1] not in short:
                    shutil.rmtree(d, ignore_errors=True)
