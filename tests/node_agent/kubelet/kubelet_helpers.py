"""Kubelet parts over fakes: a KubeletApi given only the parts a test exercises, and a PodSync
over a fake runtime, informer, client and network."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from knemu.config import AgentConfig
from knemu.errors import Exhausted, Invalid, Unavailable
from knemu.node_agent.cni.conflist import CniConfig
from knemu.node_agent.dataplane.faults import Impairments
from knemu.node_agent.dataplane.flows import FlowLog
from knemu.node_agent.kubelet.api import KubeletApi
from knemu.node_agent.kubelet.capture import CaptureTaps
from knemu.node_agent.kubelet.pod_sync import PodSync
from knemu.node_agent.runtime.pods import PodHandle
from knemu.proto import knemu_pb2 as pb


def make_kubelet_api(
    pods: Any = None,
    *,
    flows: FlowLog | None = None,
    faults: Impairments | None = None,
    table: Callable[[], dict[str, Any]] = dict,
    metrics: Callable[[], str] = str,
    cni: Callable[[], CniConfig | None] = lambda: None,
    inject: Callable[[str, bytes, float], None] = lambda key, packet, now: None,
    captures: CaptureTaps | None = None,
) -> KubeletApi:
    """Node ``node-1``; ``pods`` has ``handles`` and ``runtime`` (empty when not given)."""
    return KubeletApi(
        "node-1",
        pods if pods is not None else SimpleNamespace(handles={}, runtime=None),
        flows if flows is not None else FlowLog(),
        faults if faults is not None else Impairments(seed=1),
        table=table,
        metrics=metrics,
        cni=cni,
        inject=inject,
        captures=captures if captures is not None else CaptureTaps(lambda: None, {}),
    )


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

    def receiver(self, key: str) -> Callable[[bytes, int, float], None]:
        return lambda packet, gso_size, now: None

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
