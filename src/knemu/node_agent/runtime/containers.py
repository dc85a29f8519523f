"""Containers: real processes in a pod's namespaces, with the kubelet's restart semantics.

What runs for an image is decided by ``workloads.plan_container``.

A process is ``nsenter --uts=/proc/<pause>/ns/uts ip netns exec <netns> <argv>``: ``ip netns
exec`` enters the network namespace and bind-mounts the pod's resolv.conf and hosts, nsenter
adds the UTS namespace (hostname); both exec, so the pid we get is the container's.

``ContainerCore`` is the sans-I/O state machine (waiting/running/terminated, restart counts,
CrashLoopBackOff delays, following the kubelet's pod lifecycle doc:
https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#restart-policy); ``Runner``
is its asyncio adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import shutil
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from knemu.config import KUBERNETES_SERVICE_IP
from knemu.errors import KnemuError, LocalError, NotFound
from knemu.node_agent.runtime import isolation, probes
from knemu.node_agent.runtime.log_index import LogIndex
from knemu.node_agent.runtime.oci_launch import ImageStep
from knemu.node_agent.runtime.oci_spec import BindMount
from knemu.node_agent.runtime.runc import POD_NICE_PREFIX, OciContainer
from knemu.node_agent.runtime.stdin import ContainerStdin
from knemu.node_agent.runtime.volumes import VolumeError, plan_mounts, token_mount
from knemu.node_agent.runtime.workloads import expand_vars, package_root, plan_container
from knemu.proto import knemu_pb2 as pb

log = logging.getLogger(__name__)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BACKOFF_INITIAL_S = 10.0  # kubelet: 10 s, doubled per restart, capped at 5 minutes
BACKOFF_MAX_S = 300.0
BACKOFF_RESET_S = 600.0  # a container that ran 10 minutes restarts without back-off
LOG_WATCH_S = 0.2  # how often the log file's growth is recorded (line times, kubelet/logs.py)
PROCESS_WAIT_S = 5.0  # how long an exec waits for a just-started container's process
LISTEN_WAIT_S = 10.0  # how long a built-in server may take to listen before it counts ready


# What the kubelet gives every container for the api-server's own Service (its
# enableServiceLinks "master service" variables): client-go's in-cluster configuration reads
# KUBERNETES_SERVICE_HOST/PORT.
MASTER_SERVICE_ENV = {
    "KUBERNETES_SERVICE_HOST": KUBERNETES_SERVICE_IP,
    "KUBERNETES_SERVICE_PORT": "443",
    "KUBERNETES_SERVICE_PORT_HTTPS": "443",
    "KUBERNETES_PORT": f"tcp://{KUBERNETES_SERVICE_IP}:443",
    "KUBERNETES_PORT_443_TCP": f"tcp://{KUBERNETES_SERVICE_IP}:443",
    "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
    "KUBERNETES_PORT_443_TCP_PORT": "443",
    "KUBERNETES_PORT_443_TCP_ADDR": KUBERNETES_SERVICE_IP,
}


def container_env(
    container: pb.Container, hostname: str, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment a container starts with: image-like defaults, then the spec's env
    (later entries win, and may refer to earlier ones with $(VAR), as in Kubernetes)."""
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": hostname, "HOME": "/root", **MASTER_SERVICE_ENV}
    env.update(extra or {})
    for var in container.env:
        env[var.name] = expand_vars(var.value, env)
    return env


def exit_code(returncode: int) -> int:
    """A negative returncode is death by signal: report 128+N like a container runtime."""
    return 128 - returncode if returncode < 0 else returncode


@dataclass
class ContainerCore:
    """The kubelet state machine of one container (sans-I/O; ``now`` is monotonic seconds)."""

    name: str
    restart_policy: str = "Always"  # Always | OnFailure | Never
    backoff_initial_s: float = BACKOFF_INITIAL_S
    backoff_max_s: float = BACKOFF_MAX_S
    state: str = "waiting"  # waiting | running | terminated
    reason: str = "ContainerCreating"
    message: str = ""
    exit_code: int = 0
    restart_count: int = 0
    started_at: float = 0.0  # wall clock of the current/last start (for RFC 3339 output)
    # lastState.terminated: the run before a restart (exit code, reason, wall clock times)
    last: tuple[int, str, float, float] | None = None
    _started_mono: float = 0.0
    _backoff_s: float = field(default=0.0)

    def cannot_run(self, reason: str, message: str) -> None:
        self.state, self.reason, self.message = "waiting", reason, message

    def on_started(self, now: float, wall: float) -> None:
        self.state, self.reason, self.message, self.exit_code = "running", "", "", 0
        self._started_mono, self.started_at = now, wall

    def on_exited(
        self, returncode: int, now: float, reason: str = "", message: str = "", wall: float = 0.0
    ) -> float | None:
        """Record an exit; return the delay before the restart, or None when it stays dead."""
        self.exit_code = exit_code(returncode)
        self.state = "terminated"
        self.reason = reason or ("Completed" if self.exit_code == 0 else "Error")
        self.message = message
        if self.restart_policy == "Never" or (
            self.restart_policy == "OnFailure" and self.exit_code == 0
        ):
            return None
        self.last = (self.exit_code, self.reason, self.started_at, wall)
        if now - self._started_mono >= BACKOFF_RESET_S:
            self._backoff_s = 0.0
        delay = self._backoff_s
        self._backoff_s = min(
            self.backoff_max_s, self._backoff_s * 2 if self._backoff_s else self.backoff_initial_s
        )
        if delay > 0:
            self.state, self.reason = "waiting", "CrashLoopBackOff"
            self.message = f"back-off {delay:g}s restarting failed container={self.name}"
        return delay

    def on_restarting(self) -> None:
        self.restart_count += 1


@dataclass(frozen=True)
class ContainerStatus:
    """One entry of pod.status.containerStatuses (pb.ContainerStatus fields)."""

    name: str
    image: str = ""
    ready: bool = False
    restart_count: int = 0
    state: str = "waiting"  # waiting | running | terminated
    reason: str = ""
    message: str = ""
    exit_code: int = 0
    started_at: str = ""  # RFC 3339
    last: tuple[int, str, str, str] | None = None  # lastState: exit code, reason, RFC 3339 x2
    init: bool = False  # an init container (status.initContainerStatuses)
    started: bool = True  # false while its startup probe has not succeeded


@dataclass(frozen=True)
class PodContext:
    """What a container needs to know about its pod sandbox."""

    key: str  # "namespace/name"
    name: str
    netns: str
    pause_pid: int
    pod_ip: str
    pid_ns_path: str = ""  # the pod's PID namespace for containers without a real image
    host_network: bool = False

    @property
    def netns_path(self) -> str:
        return f"/proc/{self.pause_pid}/ns/net"


async def spawn_in_pod(
    pod: PodContext,
    argv: list[str],
    env: dict[str, str],
    cwd: str | None,
    iso: isolation.Isolation | None = None,
    mounts: Sequence[BindMount] = (),
    **kwargs: object,
) -> asyncio.subprocess.Process:
    """Start ``argv`` in the pod's UTS + network namespaces with its resolv.conf/hosts; with
    ``iso``, as a container: its own mount namespace in the pod's PID namespace, with the
    privileges ``iso`` grants (``runtime.isolation``).  Niced below the agent (POD_NICE_PREFIX)."""
    if iso is None:
        full = [*POD_NICE_PREFIX, "nsenter", f"--uts=/proc/{pod.pause_pid}/ns/uts", "ip", "netns",
                "exec", pod.netns, *argv]  # fmt: skip
    else:
        full = [
            *POD_NICE_PREFIX,
            *isolation.run_argv(iso, pod.pause_pid, pod.netns, pod.pid_ns_path, argv, mounts),
        ]
    return await asyncio.create_subprocess_exec(
        *full,
        env=env,
        cwd=cwd or "/",
        start_new_session=True,
        **kwargs,  # type: ignore[arg-type]
    )


def rfc3339(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


EventSink = Callable[[str, str, str], None]  # (type, reason, message)


class Runner:
    """Runs one container: start, supervise, restart with back-off, probe, stop."""

    def __init__(
        self,
        spec: pb.Container,
        pod: PodContext,
        core: ContainerCore,
        env: dict[str, str],
        log_path: Path,
        on_change: Callable[[], None],
        on_event: EventSink,
        image_step: ImageStep | None = None,
    ) -> None:
        self.spec, self.pod, self.core, self.env = spec, pod, core, env
        # Images from the node's store run as runc containers (runtime.oci_launch); without
        # an image step (or for a built-in's image) the process runs in the pod's namespaces.
        self.image_step = image_step
        self.oci: OciContainer | None = None
        self.log_path = log_path
        self.plan = plan_container(spec, pod.name, env)
        self.iso = isolation.isolation_for(spec, pod.host_network)
        if self.plan.builtin:
            self.env = {**env, "PYTHONPATH": package_root()}
        self._on_change, self._on_event = on_change, on_event
        self.process: asyncio.subprocess.Process | None = None
        self.stdin: ContainerStdin | None = None  # the current run's, with spec.stdin (attach)
        self.log_start = 0  # log file offset where the current run's output begins
        self.previous_start: int | None = None  # ... and the previous run's (logs -p)
        self.log_index = LogIndex()  # when the log grew (logs --timestamps, --since)
        self._log_watch: asyncio.Task[None] | None = None
        self.runs = 0
        self.ready = False
        self._task: asyncio.Task[None] | None = None
        self._probe_tasks: list[asyncio.Task[None]] = []
        self.started = True  # past its startup probe (containerStatuses[].started)
        self._stopping = False

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(
            self._supervise(), name=f"container {self.pod.key}/{self.spec.name}"
        )
        self._log_watch = loop.create_task(
            self._watch_log(), name=f"log index {self.pod.key}/{self.spec.name}"
        )

    async def _watch_log(self) -> None:
        """Record when the log file grows: the kubelet/logs.py times of its lines."""
        while True:
            with contextlib.suppress(OSError):
                self.log_index.observe(self.log_path.stat().st_size, time.time())
            await asyncio.sleep(LOG_WATCH_S)

    async def wait_done(self) -> None:
        """Until the container has stopped for good (init containers: success, or failure
        under restartPolicy Never)."""
        if self._task is not None:
            await self._task

    def status(self) -> ContainerStatus:
        c = self.core
        return ContainerStatus(
            name=self.spec.name, image=self.spec.image, started=self.started,
            ready=self.ready and self.started and c.state == "running",
            restart_count=c.restart_count, state=c.state, reason=c.reason, message=c.message,
            exit_code=c.exit_code, started_at=rfc3339(c.started_at) if c.started_at else "",
            last=(c.last[0], c.last[1], rfc3339(c.last[2]) if c.last[2] else "",
                  rfc3339(c.last[3]) if c.last[3] else "") if c.last else None,
        )  # fmt: skip

    async def _supervise(self) -> None:
        if self.image_step is not None:
            try:
                self.oci = await self.image_step.resolve(
                    self.plan.error, self._waiting, self._on_event
                )
                self._use_spec(self.image_step.spec)
            except KnemuError as exc:  # e.g. the image's User is not in its /etc/passwd
                config = isinstance(exc, LocalError)  # the spec or the image, not the node
                self._waiting("CreateContainerConfigError" if config else "CreateContainerError",
                              exc.message)  # fmt: skip
                self._on_event("Warning", "Failed", exc.message)
                return
        if self.oci is None and self.plan.error:
            self.core.cannot_run("ErrImagePull", self.plan.error)
            self._on_change()
            self._on_event("Warning", "Failed", self.plan.error)
            return
        try:
            await self._restart_loop()
        except Exception as exc:  # a bug here must show up on the pod, not vanish in a task
            message = f"knemu failed to run container {self.spec.name}: {exc!r}; see agent log"
            self.core.cannot_run("RunContainerError", message)
            self._on_change()
            self._on_event("Warning", "Failed", message)
            log.exception("container %s/%s", self.pod.key, self.spec.name)

    def _use_spec(self, spec: pb.Container) -> None:
        """The spec with its env resolved (the image step's configuration): values are final,
        not expanded again (a ConfigMap value's ``$(X)`` stays as written, as in Kubernetes)."""
        env = {"PATH": DEFAULT_PATH, "HOSTNAME": self.env.get("HOSTNAME", ""), "HOME": "/root",
               **MASTER_SERVICE_ENV}  # fmt: skip
        env.update((v.name, v.value) for v in spec.env)
        self.spec, self.env = spec, env
        self.iso = isolation.isolation_for(spec, self.pod.host_network)
        self.plan = plan_container(spec, self.pod.name, env)
        if self.plan.builtin:
            self.env = {**env, "PYTHONPATH": package_root()}

    def _waiting(self, reason: str, message: str) -> None:
        self.core.cannot_run(reason, message)
        self._on_change()

    async def _restart_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            returncode, reason, message = await self._run_once(loop)
            wall = datetime.datetime.now(datetime.UTC).timestamp()
            delay = self.core.on_exited(returncode, loop.time(), reason, message, wall)
            self._on_change()
            if delay is None or self._stopping:
                return
            if delay > 0:
                self._on_event("Warning", "BackOff", self.core.message)
                await asyncio.sleep(delay)  # the back-off itself, not a wait for a condition
            self.core.on_restarting()

    async def _run_once(self, loop: asyncio.AbstractEventLoop) -> tuple[int, str, str]:
        """Start the process and wait for it; (returncode, reason override, message)."""
        problem = "" if self.oci else self._start_problem()
        if problem:
            self._on_event("Warning", "Failed", problem)
            return 128, "StartError", problem
        if self.core.restart_count == 0 and not (self.image_step and self.image_step.pulled):
            what = (
                f"knemu built-in {self.plan.builtin}" if self.plan.builtin else "the node's tools"
            )
            what = "the node's image store" if self.oci else what
            self._on_event(
                "Normal", "Pulled",
                f'Container image "{self.spec.image}" already present on machine ({what})',
            )  # fmt: skip
        self._on_event("Normal", "Created", f"Created container {self.spec.name}")
        try:
            self.process = await self._spawn()
        except OSError as exc:
            message = f"cannot start container {self.spec.name}: {exc}"
            self._on_event("Warning", "Failed", message)
            return 128, "StartError", message
        self.core.on_started(loop.time(), datetime.datetime.now(datetime.UTC).timestamp())
        self.ready = False
        self._on_event("Normal", "Started", f"Started container {self.spec.name}")
        self._start_probes(loop.time())
        self._on_change()
        try:
            return await self.process.wait(), "", ""
        finally:
            self._stop_probes()
            self.ready = False
            if self.stdin is not None:
                self.stdin.close()  # stdin "remains closed until the container is restarted"

    async def _spawn(self) -> asyncio.subprocess.Process:
        """Start one run: output appended to the log file; stdin a pipe the agent holds for
        attach when the spec asks for it (``stdin: true``), else /dev/null."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        stdin_fd: int | None = None
        if self.spec.stdin:
            self.stdin, stdin_fd = await ContainerStdin.open(self.spec.stdin_once)
        try:
            with open(self.log_path, "ab") as log:
                if self.runs:
                    self.previous_start = self.log_start
                self.runs += 1
                self.log_start = log.tell()
                if self.oci is not None:
                    return await self.oci.start(
                        stdin=asyncio.subprocess.DEVNULL if stdin_fd is None else stdin_fd,
                        stdout=log, stderr=log,
                    )  # fmt: skip
                return await spawn_in_pod(
                    self.pod, list(self.plan.argv), self.env, self.spec.working_dir or None,
                    self.iso, self._mounts(),
                    stdin=asyncio.subprocess.DEVNULL if stdin_fd is None else stdin_fd,
                    stdout=log, stderr=log,
                )  # fmt: skip
        except OSError:
            if self.stdin is not None:
                self.stdin.close()
            raise
        finally:
            if stdin_fd is not None:
                os.close(stdin_fd)  # the process has its copy; EOF must follow our end only

    def previous_log(self) -> bytes:
        """The previous run's output (``kubectl logs --previous``); NotFound without one."""
        if self.previous_start is None:
            raise NotFound(
                f'previous terminated container "{self.spec.name}" in pod "{self.pod.name}" '
                "not found: it has not restarted"
            )
        with open(self.log_path, "rb") as f:
            f.seek(self.previous_start)
            return f.read(self.log_start - self.previous_start)

    def _mounts(self) -> list[BindMount]:
        """The volumeMounts of a container without a real image (its pod's volumes) and its
        ServiceAccount token."""
        if self.image_step is None:
            return []
        pod, mounts = self.image_step.pod, list(self.spec.volume_mounts)
        token = token_mount(pod.volumes, mounts)
        if not mounts:
            return token
        if pod.volume_error:
            raise VolumeError(pod.volume_error)
        return plan_mounts(pod.volumes, mounts, self.spec.name) + token

    def _start_problem(self) -> str:
        """Why the process cannot start (Kubernetes reason StartError), or ''."""
        try:
            if len(self._mounts()) > isolation.MAX_MOUNTS:
                return (
                    f"container {self.spec.name}: at most {isolation.MAX_MOUNTS} volumeMounts "
                    "for a container without a real image"
                )
            for mount in self._mounts():
                problem = isolation.mount_problem(mount, os.path.isdir(mount.destination))
                if problem:
                    return f"container {self.spec.name}: {problem}"
        except KnemuError as exc:
            return exc.message
        wd = self.spec.working_dir
        if wd and not os.path.isdir(wd):
            return (
                f"working directory {wd!r} does not exist on the node; create it or drop workingDir"
            )
        exe = self.plan.argv[0]
        if "/" not in exe and shutil.which(exe, path=self.env.get("PATH", DEFAULT_PATH)) is None:
            return (
                f'exec: "{exe}": executable file not found in $PATH of container {self.spec.name}'
            )
        return ""

    def _start_probes(self, now: float) -> None:
        """The startup probe first, if any; then liveness and readiness (probe docs)."""
        self.started = True
        if self.spec.has_startup_probe:
            try:
                pspec = probes.ProbeSpec.from_pb(self.spec.startup_probe)
            except ValueError as exc:
                self._on_event("Warning", "Unhealthy", f"Startup probe ignored: {exc}")
            else:
                self.started = False
                tracker = probes.StartupTracker(pspec, now)
                task = asyncio.get_running_loop().create_task(self._startup(tracker))
                self._probe_tasks.append(task)
                return
        self._start_steady_probes(now)

    async def _startup(self, tracker: probes.StartupTracker) -> None:
        loop = asyncio.get_running_loop()
        attempt = self._attempt_fn(tracker.spec)
        while True:
            delay = tracker.next_due() - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # the probe period itself
            ok, message = await attempt()
            outcome = tracker.record(ok, loop.time())
            if outcome == "started":
                self.started = True
                self._on_change()
                self._start_steady_probes(loop.time())
                return
            if outcome == "failed" and self.process is not None:
                self._on_event("Warning", "Unhealthy", f"Startup probe failed: {message}")
                self._on_event(
                    "Normal", "Killing",
                    f"Container {self.spec.name} failed startup probe, will be restarted",
                )  # fmt: skip
                self._kill(self.process.pid, signal.SIGKILL)
                return

    def _start_steady_probes(self, now: float) -> None:
        for kind, has, probe in (
            ("Readiness", self.spec.has_readiness_probe, self.spec.readiness_probe),
            ("Liveness", self.spec.has_liveness_probe, self.spec.liveness_probe),
        ):
            if not has:
                continue
            try:
                pspec = probes.ProbeSpec.from_pb(probe)
            except ValueError as exc:
                self._on_event("Warning", "Unhealthy", f"{kind} probe ignored: {exc}")
                continue
            tracker = probes.ProbeTracker(pspec, now, initial=kind == "Liveness")
            flip = self._on_readiness if kind == "Readiness" else self._on_liveness
            attempt = self._attempt_fn(pspec)
            self._probe_tasks.append(
                asyncio.get_running_loop().create_task(probes.probe_loop(tracker, attempt, flip))
            )
        if self.spec.has_readiness_probe:
            return
        if (
            self.plan.ports and self.oci is None
        ):  # a real nginx is listening within milliseconds of its start
            task = asyncio.get_running_loop().create_task(self._ready_when_listening())
            self._probe_tasks.append(task)
        else:
            self.ready = True  # no readiness probe: ready once running (pod-lifecycle doc)

    async def _ready_when_listening(self) -> None:
        """Built-in servers without a readiness probe: ready once they accept connections,
        so a pod never joins a Service's endpoints before its emulated server listens."""
        spec = probes.ProbeSpec("tcp_socket", str(self.plan.ports[0]), timeout_s=1.0)
        deadline = asyncio.get_running_loop().time() + LISTEN_WAIT_S
        while asyncio.get_running_loop().time() < deadline:
            ok, _ = await probes.run_probe(
                spec, self.spec, self.pod.netns_path, "127.0.0.1", self.run_exec
            )
            if ok:
                break
            await asyncio.sleep(0.02)  # polling the condition, bounded by the deadline
        self.ready = True  # after the deadline: as Kubernetes would (no probe -> ready)
        self._on_change()

    def _attempt_fn(self, pspec: probes.ProbeSpec) -> Callable[[], Awaitable[tuple[bool, str]]]:
        async def attempt() -> tuple[bool, str]:
            return await probes.run_probe(
                pspec, self.spec, self.pod.netns_path, self.pod.pod_ip, self.run_exec
            )

        return attempt

    def _on_readiness(self, ok: bool, message: str) -> None:
        self.ready = ok
        if not ok:
            self._on_event("Warning", "Unhealthy", f"Readiness probe failed: {message}")
        self._on_change()

    def _on_liveness(self, ok: bool, message: str) -> None:
        if ok or self.process is None or self.process.returncode is not None:
            return
        self._on_event("Warning", "Unhealthy", f"Liveness probe failed: {message}")
        self._on_event(
            "Normal", "Killing",
            f"Container {self.spec.name} failed liveness probe, will be restarted",
        )  # fmt: skip
        self._kill(self.process.pid, signal.SIGKILL)

    def _kill(self, pgid: int, sig: int) -> None:
        """Signal a run: runc's process group and, for SIGKILL, the container itself (whose
        init ignores signals it has no handler for, and may have left runc's group)."""
        _killpg(pgid, sig)
        if self.oci is not None and sig == signal.SIGKILL:
            asyncio.get_running_loop().create_task(self.oci.kill(sig))

    def _stop_probes(self) -> None:
        for task in self._probe_tasks:
            task.cancel()
        self._probe_tasks.clear()

    async def run_exec(self, argv: list[str]) -> int:
        """Run a command in the container's context (exec probes); its exit code."""
        if self.oci is not None:
            proc = await self.oci.exec(
                argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            return await proc.wait()
        proc = await self.exec_process(
            argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            return await proc.wait()
        finally:
            if proc.returncode is None:
                _killpg(proc.pid, signal.SIGKILL)
                await proc.wait()

    async def exec_process(self, argv: list[str], **kwargs: object) -> asyncio.subprocess.Process:
        """``argv`` in this (built-in) container's namespaces with its privileges."""
        target = await self._container_process()
        if target is None:
            raise LocalError(
                f"container {self.spec.name} of pod {self.pod.key} has no running process; "
                "wait until it runs"
            )
        return await asyncio.create_subprocess_exec(
            *isolation.exec_argv(self.iso, target, argv), env=self.env,
            cwd=self.spec.working_dir or "/", start_new_session=True,
            **kwargs,  # type: ignore[arg-type]
        )  # fmt: skip

    async def _container_process(self) -> int | None:
        """The container's process once its launchers are done (an exec right after the
        start waits for it, bounded by PROCESS_WAIT_S)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PROCESS_WAIT_S
        while self.process is not None and self.process.returncode is None:
            target = container_process(self.process.pid)
            if target is not None or loop.time() > deadline:
                return target
            await asyncio.sleep(0.01)  # polling the condition, bounded by the deadline
        return None

    async def stop(self, grace_s: float) -> None:
        """SIGTERM, then SIGKILL after the grace period (pod termination, Kubernetes docs)."""
        self._stopping = True
        proc = self.process
        if proc is not None and proc.returncode is None:
            _killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace_s)
            except TimeoutError:
                pass
        if self.oci is not None:
            await self.oci.kill(signal.SIGKILL)
        if proc is not None:
            _killpg(proc.pid, signal.SIGKILL)  # the leader and anything it left behind
            await proc.wait()
        if self.oci is not None:
            await self.oci.delete()
        self._stop_probes()
        if self._log_watch is not None:
            self._log_watch.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def container_process(pid: int) -> int | None:
    """The container's own process under its launcher ``pid`` (nsenter, ip netns exec and
    the PID namespace's nsenter fork once): the first descendant in another PID namespace."""
    try:
        mine = os.readlink("/proc/self/ns/pid")
        for _ in range(8):  # a short, fixed chain of launchers
            if os.readlink(f"/proc/{pid}/ns/pid") != mine:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                # Still the init script (mounting /proc, /tmp) or setpriv: not yet the
                # container's own command.
                launching = argv[0] == b"setpriv" or b"knemu-init" in argv[:4]
                return None if launching else pid
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            if not children:
                return None
            pid = int(children[0])
    except (OSError, ValueError):
        return None
    return None
