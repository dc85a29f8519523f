"""PodSync (the agent's kubelet loop) against fakes: convergence, retries and reports."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from localcluster_helpers import apoll

from knemu.config import AgentConfig
from knemu.errors import Exhausted, Invalid, Unavailable
from knemu.node_agent.kubelet.pod_sync import PodSync
from knemu.node_agent.runtime.pods import PodHandle, PodStatus
from knemu.proto import knemu_pb2 as pb


def pod(name: str, uid: str = "", node: str = "node-1", phase: str = "Pending") -> pb.Pod:
    meta = pb.ObjectMeta(name=name, namespace="default", uid=uid or f"uid-{name}")
    return pb.Pod(metadata=meta, node_name=node, phase=phase)


class FakeRuntime:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.stopped: list[str] = []
        self.failures: dict[str, int] = {}  # key -> how many more starts fail
        self.socks: list[socket.socket] = []

    async def start_pod(self, p: pb.Pod) -> PodHandle:
        key = f"{p.metadata.namespace}/{p.metadata.name}"
        if self.failures.get(key, 0) > 0:
            self.failures[key] -= 1
            raise Exhausted(f"podCIDR of node-1 is full; cannot start {key}")
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        a.setblocking(False)
        self.socks += [a, b]
        self.started.append(f"{key}@{p.metadata.uid}")
        ip = f"10.244.1.{len(self.started) + 1}"
        return PodHandle(key, p.metadata.uid, ip, a.fileno(), "kn0", "ns", 1)

    async def stop_pod(self, key: str) -> None:
        self.stopped.append(key)

    async def stop_all(self) -> None:
        pass

    async def adopt_or_clean(self, pods: list[pb.Pod]) -> list[PodHandle]:
        return [await self.start_pod(p) for p in pods]


class FakeInformer:
    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], pb.Pod] = {}

    def get(self, kind: str, namespace: str, name: str) -> Any:
        return self.pods.get((namespace, name))

    def list(self, kind: str) -> list[Any]:
        return list(self.pods.values())

    def put(self, p: pb.Pod) -> None:
        self.pods[(p.metadata.namespace, p.metadata.name)] = p


class FakeClient:
    def __init__(self) -> None:
        self.statuses: list[pb.PodStatusReport] = []
        self.events: list[pb.EventReport] = []
        self.down = 0  # calls that fail with Unavailable first

    async def report_pod_status(self, report: pb.PodStatusReport) -> bool:
        if self.down > 0:
            self.down -= 1
            raise Unavailable("api-server 127.0.0.1:1: RegisterNode failed")
        if report.name == "rejected":
            raise Invalid("Pod", "rejected", [])
        self.statuses.append(report)
        return True

    async def record_event(self, report: pb.EventReport) -> None:
        self.events.append(report)


class FakeNetwork:
    """The router as PodSync plugs pods into it: pod IP -> key."""

    def __init__(self) -> None:
        self.pods: dict[str, str] = {}

    def receiver(self, key: str) -> Callable[[bytes, float], None]:
        return lambda packet, now: None

    def plug(self, key: str, ip: str) -> None:
        self.pods[ip] = key

    def unplug(self, key: str, ip: str) -> None:
        self.pods.pop(ip)


@contextlib.asynccontextmanager
async def fake_pod_sync(tmp_path: Path) -> AsyncIterator[PodSync]:
    """A PodSync over a fake runtime, informer, client and router (state in ``tmp_path``)."""
    network = FakeNetwork()
    s = PodSync(
        AgentConfig(state_dir=str(tmp_path)), "node-1", "10.244.1.0/24", "10.244.1.1",
        "192.168.59.11", FakeInformer(), FakeClient(), network,
    )  # fmt: skip
    runtime = FakeRuntime()
    s.runtime = runtime  # type: ignore[assignment]
    reporter = asyncio.create_task(s.run_reporters())
    try:
        yield s
    finally:
        reporter.cancel()
        await s.stop_all()
        for sock in runtime.socks:
            sock.close()


@pytest.fixture
async def sync(tmp_path: Path) -> AsyncIterator[PodSync]:
    async with fake_pod_sync(tmp_path) as s:
        yield s


def idle(s: PodSync) -> bool:
    return not s._workers


async def test_first_sync_adopts_then_changes_converge(sync: PodSync) -> None:
    informer, runtime = sync.cache, sync.runtime
    informer.put(pod("a"))
    informer.put(pod("elsewhere", node="node-2"))
    informer.put(pod("done", phase="Succeeded"))
    sync.kick("default/a")  # before the first sync: ignored, the sync adopts
    await sync.on_synced()
    assert runtime.started == ["default/a@uid-a"]
    assert set(sync.ports) == {"default/a"} and sync.network.pods == {"10.244.1.2": "default/a"}
    informer.put(pod("b"))
    sync.kick("default/b")
    await apoll(lambda: "default/b" in sync.handles and idle(sync), 5, "pod b started")
    del informer.pods[("default", "a")]
    sync.kick("default/a")
    await apoll(lambda: runtime.stopped == ["default/a"] and idle(sync), 5, "pod a stopped")
    assert "default/a" not in sync.ports and "10.244.1.2" not in sync.network.pods


async def test_a_new_uid_replaces_the_pod_and_finished_pods_are_kept(sync: PodSync) -> None:
    informer, runtime = sync.cache, sync.runtime
    informer.put(pod("a", uid="one"))
    await sync.on_synced()
    informer.put(pod("a", uid="two"))
    sync.kick("default/a")
    await apoll(lambda: runtime.started[-1] == "default/a@two" and idle(sync), 5, "restart")
    assert runtime.stopped == ["default/a"]
    informer.put(pod("a", uid="two", phase="Succeeded"))
    sync.kick("default/a")
    await apoll(lambda: idle(sync), 5, "converged")
    assert "default/a" in sync.handles  # kept for its logs, not restarted
    assert runtime.started == ["default/a@one", "default/a@two"]


async def test_failed_start_is_retried_with_backoff(sync: PodSync) -> None:
    informer, runtime = sync.cache, sync.runtime
    await sync.on_synced()
    runtime.failures["default/full"] = 1
    informer.put(pod("full"))
    sync.kick("default/full")
    await apoll(lambda: "default/full" in sync.handles, 5, "the retry to start the pod")
    assert runtime.started == ["default/full@uid-full"]


async def test_reports_survive_an_outage_and_rejected_ones_are_dropped(sync: PodSync) -> None:
    client = sync.client
    client.down = 2
    sync._on_status(PodStatus("default", "rejected", "u0", "node-1", "Running"))
    sync._on_status(PodStatus("default", "a", "u1", "node-1", "Pending"))
    sync._on_status(PodStatus("default", "a", "u1", "node-1", "Running", "10.244.1.9", True))
    sync._on_event("default/a", "Warning", "BackOff", "restarting failed container")
    await apoll(lambda: bool(client.statuses) and bool(client.events), 10, "reports delivered")
    assert [(r.name, r.phase) for r in client.statuses] == [("a", "Running")]  # latest only
    assert client.events[0].involved_name == "a" and client.events[0].source == "kubelet/node-1"
