"""The agent's kubelet loop: converge the pods bound to this node, report their status.

Each pod key has at most one worker at a time; an event for a key marks it dirty and the worker
runs ``_converge`` until it stays clean, so start/stop of one pod are serialised while
different pods proceed in parallel (the kubelet's per-pod workers, pod_workers.go).  A pod that
fails to start is retried with capped backoff; its events and Pending status were already sent
by the runtime.  Status reports and events are queued and retried while the api-server is
unreachable, keeping only the latest status per pod and a bounded number of events.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any, Protocol

from knemu.config import AgentConfig
from knemu.errors import KnemuError, LocalError, RemoteError
from knemu.node_agent.cni.hostports import HostPorts
from knemu.node_agent.cni.portmap import NODE_PORTS_REASON
from knemu.node_agent.dataplane.adapters import TunPort
from knemu.node_agent.dataplane.offload_port import OffloadTunPort
from knemu.node_agent.runtime.pods import PodHandle, PodRuntime, PodStatus
from knemu.proto import knemu_pb2 as pb
from knemu.proto.client import Backoff

log = logging.getLogger(__name__)

MAX_QUEUED_EVENTS = 1000
REPORT_RETRY_S = 1.0


def wants_pod(pod: pb.Pod, my_name: str) -> bool:
    """Should this node keep ``pod``? Bound here and not being deleted.  A finished pod is kept
    (not restarted) until it is deleted, so that its logs stay readable, as the kubelet does."""
    return pod.node_name == my_name and not pod.metadata.deleting


def should_start(pod: pb.Pod, my_name: str) -> bool:
    """Should this node start ``pod`` when it does not run it? Wanted and not finished."""
    return wants_pod(pod, my_name) and pod.phase not in ("Succeeded", "Failed")


class ObjectCache(Protocol):
    """The informer's cache of watched objects (``proto.client.Informer``)."""

    def get(self, kind: str, namespace: str, name: str) -> Any | None: ...

    def list(self, kind: str) -> list[Any]: ...


class StatusClient(Protocol):
    """Where pod statuses and events go (``proto.client.ClusterClient``)."""

    async def report_pod_status(self, report: pb.PodStatusReport) -> Any: ...

    async def record_event(self, report: pb.EventReport) -> Any: ...


class PodNetwork(Protocol):
    """The data plane a running pod's eth0 is plugged into: the router (and the NetworkPolicy
    engine, which polices a pod from its first packet)."""

    def receiver(self, key: str) -> Callable[[bytes, int, float], None]:
        """What to call with each packet the pod sends (read from its TUN): (packet,
        gso_size of a TCP super-packet or 0, now)."""
        ...

    def plug(self, key: str, ip: str) -> None: ...

    def unplug(self, key: str, ip: str) -> None: ...


class PodSync:
    """The kubelet loop of node ``node_name``: its pods from ``cache``, run by a PodRuntime,
    plugged into ``network``, their statuses and events sent to ``client``."""

    def __init__(
        self,
        config: AgentConfig,
        node_name: str,
        pod_cidr: str,
        gateway_ip: str,
        node_ip: str,
        cache: ObjectCache,
        client: StatusClient,
        network: PodNetwork,
    ) -> None:
        self.name = node_name
        self.cache = cache
        self.client = client
        self.network = network
        self._seed = config.seed
        self.runtime = PodRuntime(
            config, node_name, pod_cidr, gateway_ip, self._on_status, self._on_event,
            # hostNetwork pods' IP; without one (fakes) plan_network refuses them by name
            node_ip=node_ip,
        )  # fmt: skip
        self.ports: dict[str, TunPort | OffloadTunPort] = {}
        self.handles: dict[str, PodHandle] = {}
        self.hostports = HostPorts(self._on_event, config.host_ports)
        self._tun_offload = config.tun_offload
        self._rejected: dict[str, str] = {}  # pod key -> uid refused at admission
        self.synced = False
        self._dirty: set[str] = set()
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._backoff: dict[str, Backoff] = {}
        self._retry: dict[str, asyncio.TimerHandle] = {}
        self._statuses: dict[str, pb.PodStatusReport] = {}
        self._events: collections.deque[pb.EventReport] = collections.deque()
        self.events_dropped = 0
        self._wake = asyncio.Event()

    # -- convergence -------------------------------------------------------------------------

    async def on_synced(self) -> None:
        """First sync: adopt or clean what a previous run left; later syncs re-check all."""
        mine = [p for p in self.cache.list("Pod") if p.node_name == self.name]
        if not self.synced:
            # Admission in creation order, as the kubelet's HandlePodAdditions sorts them.
            mine.sort(key=lambda p: p.metadata.creation_timestamp)
            wanted = [p for p in mine if should_start(p, self.name)]
            wanted = [p for p in wanted if self._admit(p)]
            for handle in await self.runtime.adopt_or_clean(wanted):
                self._attach(handle)
            self.synced = True
        for pod in mine:
            self.kick(f"{pod.metadata.namespace}/{pod.metadata.name}")
        for key in list(self.handles):
            self.kick(key)

    def kick(self, key: str) -> None:
        if not self.synced:
            return  # the first sync adopts everything at once
        self._dirty.add(key)
        if key not in self._workers:
            self._workers[key] = asyncio.create_task(self._work(key), name=f"pod-{key}")

    async def _work(self, key: str) -> None:
        try:
            while key in self._dirty:
                self._dirty.discard(key)
                await self._converge(key)
        except Exception:
            log.exception("pod %s: converging failed; will retry on the next change", key)
        finally:
            del self._workers[key]

    async def _converge(self, key: str) -> None:
        namespace, name = key.split("/", 1)
        pod = self.cache.get("Pod", namespace, name)
        have = self.handles.get(key)
        if have is not None and (
            pod is None or not wants_pod(pod, self.name) or have.uid != pod.metadata.uid
        ):
            await self._stop(key)
            have = None
        if pod is None or not should_start(pod, self.name):
            # Gone, elsewhere or finished: its host ports are free again (the scheduler
            # counts only active pods' ports too).
            self.hostports.release(key)
            self._rejected.pop(key, None)
        if have is None and pod is not None and should_start(pod, self.name):
            if not self._admit(pod):
                return
            try:
                handle = await self.runtime.start_pod(pod)
            except KnemuError as exc:
                self._schedule_retry(key, exc.message)
                return
            self._backoff.pop(key, None)
            self._attach(handle)

    def _admit(self, pod: pb.Pod) -> bool:
        """The kubelet's admission (lifecycle.predicateAdmitHandler), for host ports: a pod
        whose hostPort another pod here holds is rejected, phase Failed, never retried."""
        key, uid = f"{pod.metadata.namespace}/{pod.metadata.name}", pod.metadata.uid
        if self._rejected.get(key) == uid:
            return False
        clash = self.hostports.admit(pod)
        if clash is None:
            return True
        self._rejected[key] = uid
        self._on_event(key, "Warning", NODE_PORTS_REASON, clash.message)
        self._on_status(PodStatus(
            namespace=pod.metadata.namespace, name=pod.metadata.name, uid=uid,
            node_name=self.name, phase="Failed", reason=NODE_PORTS_REASON,
            message=f"Pod was rejected: {clash.message}",
        ))  # fmt: skip
        return False

    def _schedule_retry(self, key: str, why: str) -> None:
        backoff = self._backoff.setdefault(key, Backoff(1.0, 30.0, self._seed))
        delay = backoff.next_delay_s()
        log.info("pod %s did not start (%s); retrying in %.1f s", key, why, delay)
        old = self._retry.pop(key, None)
        if old is not None:
            old.cancel()
        self._retry[key] = asyncio.get_running_loop().call_later(delay, self.kick, key)

    def _attach(self, handle: PodHandle) -> None:
        if handle.host_network:
            # The node's own namespace and IP: no TUN to read, no route, no policy, and its
            # ports are bound by its processes themselves (nothing for portmap to publish).
            self.handles[handle.key] = handle
            return
        feed = self.network.receiver(handle.key)
        port: TunPort | OffloadTunPort
        if self._tun_offload:
            port = OffloadTunPort(handle.tun_fd, feed, name=handle.tun_name)
        else:
            port = TunPort(handle.tun_fd, lambda p, now: feed(p, 0, now), name=handle.tun_name)
        self.handles[handle.key] = handle
        self.ports[handle.key] = port
        self.network.plug(handle.key, handle.ip)
        port.start()
        self.hostports.attach(handle.key, handle.ip)

    async def _stop(self, key: str) -> None:
        handle = self.handles.pop(key)
        self.hostports.release(key)  # stop publishing before the pod's address goes away
        port = self.ports.pop(key, None)
        if port is not None:
            port.close()  # detach before the runtime closes the fd
        if not handle.host_network:
            self.network.unplug(key, handle.ip)
        self._statuses.pop(key, None)
        await self.runtime.stop_pod(key)

    async def stop_all(self) -> None:
        self.synced = False  # no new starts while draining
        for timer in self._retry.values():
            timer.cancel()
        for task in list(self._workers.values()):
            task.cancel()
        await asyncio.gather(*(self._stop(key) for key in list(self.handles)),
                             return_exceptions=True)  # fmt: skip
        await self.runtime.stop_all()

    # -- reports to the api-server ---------------------------------------------------------

    def _on_status(self, status: PodStatus) -> None:
        self._statuses[status.key] = status.to_report()
        self._wake.set()

    def _on_event(self, key: str, type_: str, reason: str, message: str) -> None:
        namespace, _, name = key.partition("/")
        self.record("Pod", namespace, name, type_, reason, message)

    def record(
        self, kind: str, namespace: str, name: str, type_: str, reason: str, message: str
    ) -> None:
        """Queue an event for the api-server (bounded: the oldest is dropped and counted)."""
        if len(self._events) >= MAX_QUEUED_EVENTS:
            self._events.popleft()
            self.events_dropped += 1
        self._events.append(pb.EventReport(
            involved_kind=kind, involved_namespace=namespace, involved_name=name, type=type_,
            reason=reason, message=message, source=f"kubelet/{self.name}",
        ))  # fmt: skip
        self._wake.set()

    async def run_reporters(self) -> None:
        """Send queued statuses and events.  While the api-server is unreachable they are kept
        and retried; one the server rejects (a LocalError: retrying cannot help) is dropped."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._send_statuses()
                await self._send_events()
            except RemoteError as exc:
                log.info("reporting to the api-server failed (%s); retrying", exc.message)
                await asyncio.sleep(REPORT_RETRY_S)
                self._wake.set()

    async def _send_statuses(self) -> None:
        while self._statuses:
            key, report = next(iter(self._statuses.items()))
            try:
                await self.client.report_pod_status(report)
            except LocalError as exc:
                log.warning("api-server rejected the status of pod %s: %s", key, exc.message)
            if self._statuses.get(key) is report:
                del self._statuses[key]

    async def _send_events(self) -> None:
        while self._events:
            try:
                await self.client.record_event(self._events[0])
            except LocalError as exc:
                log.warning("api-server rejected an event: %s", exc.message)
            self._events.popleft()
