"""From a pod's container spec to a runc container: image lookup, pull policy, OCI spec.

``OciLauncher`` is the node's: its image store (``<state_dir>/images``), runc state
(``<state_dir>/runc``), bundles (``<state_dir>/bundles``) and cgroup parent
(``/knemu/<netns prefix>-<node>``).  ``wait_for_image`` is the container's image step of
the kubelet: it returns once the container can run (from the store or as a built-in) and
reports ErrImagePull/ImagePullBackOff while it cannot (``image_pull``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from knemu.errors import KnemuError, LocalError, PodRuntimeError
from knemu.node_agent.runtime import image_pull
from knemu.node_agent.runtime.image_store import ImageStore, StoredImage, run_tool
from knemu.node_agent.runtime.images import normalize_ref
from knemu.node_agent.runtime.oci_spec import BindMount, ContainerRun, build_spec
from knemu.node_agent.runtime.runc import (
    OciContainer,
    RuncConfig,
    cgroup_mount_plan,
    cgroups_writable,
    list_containers,
    remove_cgroups,
)
from knemu.node_agent.runtime.volumes import VolumeError, plan_mounts, token_mount
from knemu.node_agent.runtime.workloads import expand_vars
from knemu.proto import knemu_pb2 as pb

log = logging.getLogger(__name__)

EventSink = Callable[[str, str, str], None]  # (type, reason, message)


class PodHandleLike(Protocol):
    key: str
    pause_pid: int


@dataclass(frozen=True)
class PodPaths:
    """What an OCI container needs of its pod sandbox."""

    key: str  # namespace/name
    netns: str  # the sandbox's netns name (container ids start with it)
    netns_path: str
    hostname: str
    etc_dir: str  # /etc/netns/<netns>: resolv.conf and hosts
    pid_ns_path: str = ""  # shareProcessNamespace
    volumes: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> node path
    volume_error: str = ""  # why the pod's volumes could not be made
    ipc_ns_path: str = ""  # the pod's IPC namespace, shared by its containers
    pod_pid_ns_path: str = ""  # the pod's PID namespace (containers without a real image)


class OciLauncher:
    def __init__(
        self, state_dir: Path, node_key: str, node_name: str, registries: tuple[str, ...] = ()
    ) -> None:
        self.node_name = node_name
        self.registries = registries
        self.store = ImageStore(state_dir / "images")
        self.runc = RuncConfig(
            state_dir / "runc", state_dir / "bundles", rootless=not cgroups_writable()
        )
        self.cgroup_parent = f"/knemu/{node_key}"
        self._cgroups_checked = False
        self._holders: list[asyncio.subprocess.Process] = []  # shared PID namespaces

    async def _ensure_cgroups(self) -> None:
        """Once: mount the cgroup hierarchies if this mount namespace lacks them (runc's
        ``cgroup_mount_plan``), then choose cgroup handling by whether they are writable."""
        if self._cgroups_checked:
            return
        self._cgroups_checked = True
        try:
            plan = cgroup_mount_plan(
                Path("/proc/self/mountinfo").read_text(), Path("/proc/self/cgroup").read_text()
            )
            for argv in plan:
                await run_tool(*argv, what="mount the cgroup hierarchies for runc", timeout_s=10)
        except (OSError, PodRuntimeError) as exc:
            log.warning("cgroups: %s; containers run without resource limits", exc)
        self.runc = dataclasses.replace(self.runc, rootless=not cgroups_writable())

    async def pod_pid_namespace(self, pod: PodHandleLike) -> str:
        """A PID namespace (and an IPC one) for a pod with ``shareProcessNamespace`` and for
        containers without a real image (the pause container's role): ``unshare --pid --ipc
        --fork sleep infinity`` inside the pod's network and UTS
        namespaces, so sandbox teardown kills it with the pod; its ``sleep`` is the PID 1 the
        pod's containers see.  Returns the namespace's path, or '' (event-free fallback:
        each container gets its own) when it cannot be made."""
        ns = f"/proc/{pod.pause_pid}/ns"
        proc = await asyncio.create_subprocess_exec(
            "nsenter", f"--net={ns}/net", f"--uts={ns}/uts", "unshare", "--pid", "--ipc",
            "--fork", "sleep", "infinity", stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        self._holders = [h for h in self._holders if h.returncode is None] + [proc]
        path = f"/proc/{proc.pid}/ns/pid_for_children"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0
        while proc.returncode is None and loop.time() < deadline:
            try:  # unshare(2) done: its children's PID namespace is no longer its own
                if os.readlink(path) != os.readlink(f"/proc/{proc.pid}/ns/pid"):
                    return path
            except OSError:
                pass
            await asyncio.sleep(0.005)  # polling the condition, bounded by the deadline
        log.warning("pod %s: no shared PID namespace (unshare did not start)", pod.key)
        return ""

    def lookup(self, image: str) -> StoredImage | None:
        return self.store.lookup(image)

    def pullable(self, image: str) -> bool:
        """Is ``image``'s registry one this node pulls from?"""
        try:
            return image_pull.registry_of(normalize_ref(image)) in self.registries
        except KnemuError:
            return False

    async def prepare(
        self, spec: pb.Container, pod: PodPaths, image: StoredImage, env: list[tuple[str, str]]
    ) -> OciContainer:
        """The container for ``spec`` (its bundle is written on each start)."""
        await self._ensure_cgroups()
        config = self.store.config(image)
        rootfs = await self.store.rootfs(image)
        etc = Path(pod.etc_dir)
        container_id = f"{pod.netns}-{spec.name}"
        if pod.volume_error and spec.volume_mounts:
            raise VolumeError(pod.volume_error)
        mounts = (
            BindMount(str(etc / "resolv.conf"), "/etc/resolv.conf"),
            BindMount(str(etc / "hosts"), "/etc/hosts"),
            BindMount(str(self.runc.bundles / container_id / "hostname"), "/etc/hostname"),
            *plan_mounts(pod.volumes, list(spec.volume_mounts), spec.name),
            *token_mount(pod.volumes, list(spec.volume_mounts)),
        )
        values = dict(env)
        # Read-only cgroups (a node container): runc --rootless=true ignores cgroup errors
        # only for a container that asks for no cgroup path and no limits (checked with
        # runc 1.1 in a compose node container), so neither is given there.
        limited = not self.runc.rootless
        run = ContainerRun(
            image=config, hostname=pod.hostname, netns_path=pod.netns_path,
            command=tuple(expand_vars(c, values) for c in spec.command),
            args=tuple(expand_vars(a, values) for a in spec.args),
            env=tuple(env), working_dir=spec.working_dir, pid_ns_path=pod.pid_ns_path,
            ipc_ns_path=pod.ipc_ns_path,
            run_as_user=spec.run_as_user if spec.HasField("run_as_user") else None,
            run_as_group=spec.run_as_group if spec.HasField("run_as_group") else None,
            memory_limit_bytes=spec.memory_limit_bytes if limited else 0,
            cpu_limit_millis=spec.cpu_limit_millis if limited else 0,
            mounts=mounts, cgroups_path=f"{self.cgroup_parent}/{container_id}" if limited else "",
            passwd=_read(rootfs / "etc" / "passwd"), group=_read(rootfs / "etc" / "group"),
            annotations={"io.kubernetes.pod.name": pod.key, "io.kubernetes.container.name":
                         spec.name, "org.opencontainers.image.ref.name": image.ref},
        )  # fmt: skip
        return OciContainer(
            self.runc, container_id, build_spec(run), rootfs, {"hostname": pod.hostname + "\n"}
        )

    async def clean(self, keep_prefixes: set[str]) -> None:
        """Delete runc containers and bundles of pods no longer here (agent restart, stop)."""
        if not self.runc.state_root.is_dir() and not self.runc.bundles.is_dir():
            return
        await self._ensure_cgroups()
        for cid in await list_containers(self.runc):
            if not any(cid.startswith(p) for p in keep_prefixes):
                await OciContainer(self.runc, cid, {}, Path()).delete()
        if self.runc.bundles.is_dir():
            for bundle in self.runc.bundles.iterdir():
                if not any(bundle.name.startswith(p) for p in keep_prefixes):
                    await OciContainer(self.runc, bundle.name, {}, Path()).delete()
        if not keep_prefixes:  # what is left in this node's cgroups is a container of ours
            remove_cgroups(self.cgroup_parent, kill=True)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


async def wait_for_image(
    launcher: OciLauncher,
    spec: pb.Container,
    builtin_error: str,
    on_waiting: Callable[[str, str], None],
    on_event: EventSink,
    on_pulled: Callable[[], None] = lambda: None,
) -> StoredImage | None:
    """The stored image to run, or None for the built-in; while neither is possible, report
    ``on_waiting(reason, message)`` and look again after the image back-off."""
    failures, pulled = 0, False
    while True:
        image = launcher.lookup(spec.image)
        decision = image_pull.decide(
            spec.image, spec.image_pull_policy, image is not None, builtin_error,
            launcher.node_name, pulled, launcher.pullable(spec.image),
        )  # fmt: skip
        if decision.kind == "pull":
            error = await _pull(launcher, spec.image, on_event)
            if not error:
                pulled = True
                on_pulled()
                continue
            decision = image_pull.ImageDecision("missing", "ErrImagePull", error)
        if decision.kind == "store" and image is not None:
            return image
        if decision.kind == "builtin":
            return None
        failures += 1
        # The first failure shows as ErrImagePull, later ones as ImagePullBackOff (kubelet).
        reason = decision.reason if failures == 1 else "ImagePullBackOff"
        on_waiting(reason, decision.message)
        on_event("Warning", "Failed", decision.message)
        if failures > 1:
            on_event("Normal", "BackOff", f'Back-off pulling image "{spec.image}"')
        await asyncio.sleep(image_pull.pull_backoff_s(failures))  # the back-off itself


async def _pull(launcher: OciLauncher, image: str, on_event: EventSink) -> str:
    """Pull ``image`` with the kubelet's events; '' or why it failed."""
    on_event("Normal", "Pulling", f'Pulling image "{image}"')
    loop = asyncio.get_running_loop()
    start = loop.time()
    registry = image_pull.registry_of(normalize_ref(image))
    try:
        await launcher.store.pull(image, image_pull.plain_http(registry))
    except KnemuError as exc:
        return f'Failed to pull image "{image}": {exc.message}'
    on_event(
        "Normal", "Pulled",
        f'Successfully pulled image "{image}" in {loop.time() - start:.3f}s',
    )  # fmt: skip
    return ""


Configure = Callable[[], pb.Container]  # the spec with its env resolved; LocalError: why not


class ImageStep:
    """One container's image step: resolve its configuration (env from ConfigMaps, Secrets,
    the downward API; its volumes), wait for its image, then build its runc container."""

    def __init__(
        self,
        launcher: OciLauncher,
        spec: pb.Container,
        pod: PodPaths,
        configure: Configure,
        next_change: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.launcher, self.spec, self.pod = launcher, spec, pod
        self.env: list[tuple[str, str]] = []
        self.configure = configure
        self.next_change = next_change  # None: a configuration error is final
        self.pulled = False  # this start pulled the image (no "already present" event)

    async def resolve(
        self, builtin_error: str, on_waiting: Callable[[str, str], None], on_event: EventSink
    ) -> OciContainer | None:
        """The runc container to run, or None when a built-in workload stands in."""
        await self._configure(on_waiting, on_event)
        image = await wait_for_image(
            self.launcher, self.spec, builtin_error, on_waiting, on_event, self._note_pull
        )
        if image is None:
            return None
        container = await self.launcher.prepare(self.spec, self.pod, image, self.env)
        if (self.spec.memory_limit_bytes or self.spec.cpu_limit_millis) and (
            self.launcher.runc.rootless
        ):
            on_event(
                "Warning", "LimitsNotEnforced",
                f"resources.limits of container {self.spec.name} are not enforced: the cgroup "
                f"filesystem of {self.launcher.node_name} is read-only (a node container)",
            )  # fmt: skip
        return container

    def _note_pull(self) -> None:
        self.pulled = True

    async def _configure(self, on_waiting: Callable[[str, str], None], on_event: EventSink) -> None:
        """As the kubelet: CreateContainerConfigError (an event each time) until the objects
        the container names exist, retried when they change."""
        while True:
            change = self.next_change() if self.next_change is not None else None
            try:
                self.spec = self.configure()
                self.env = [(v.name, v.value) for v in self.spec.env]
                return
            except LocalError as exc:
                if change is None:
                    raise  # the runner reports it
                on_waiting("CreateContainerConfigError", exc.message)
                on_event("Warning", "Failed", f"Error: {exc.message}")
            await change


def spec_env(spec: pb.Container) -> list[tuple[str, str]]:
    """The container's env in order, each value $(VAR)-expanded against the entries before
    it (Kubernetes dependent environment variables)."""
    values: dict[str, str] = {}
    out = []
    for var in spec.env:
        values[var.name] = expand_vars(var.value, values)
        out.append((var.name, values[var.name]))
    return out
