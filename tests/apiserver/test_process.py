"""Contract tests against the real api-server process (knemu.apiserver.server)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from knemu.proto import knemu_pb2 as pb
from knemu.proto.client import ClusterClient, Informer
from knemu.proto.state import LinkState
from knemu.testing import ApiServerProcess, apiserver_process, fake_cluster, rest_session, wait_for

KINDS = ("Node", "Pod", "Service", "EndpointSlice")
Key = tuple[str, str, str]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[ApiServerProcess]:
    async with apiserver_process(tmp_path) as server:
        yield server


@pytest.fixture
async def rest(api: ApiServerProcess) -> AsyncIterator[aiohttp.ClientSession]:
    async with rest_session(api.admin, base_url=api.rest_url) as session:
        yield session


async def post(rest: aiohttp.ClientSession, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
    async with rest.post(f"/api/v1/namespaces/default/{plural}", json=obj) as reply:
        body: dict[str, Any] = await reply.json()
        assert reply.status == 201, body
        return body


def service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
    }


def pod(name: str, app: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]},
    }


async def raw_stream(target: str, since: int) -> tuple[list[pb.WatchEvent], int]:
    """The events a fresh watch gets up to its SYNCED marker, and that marker's rv."""
    events: list[pb.WatchEvent] = []
    async with ClusterClient(target) as client:
        stream = client.watch(KINDS, since, "checker")
        async with contextlib.aclosing(stream):
            async for event in stream:
                if event.type == pb.WatchEvent.SYNCED:
                    return events, event.resource_version
                events.append(event)
    raise AssertionError("watch ended before SYNCED")


def view_of_snapshot(events: list[pb.WatchEvent]) -> dict[Key, int]:
    out = {}
    for e in events:
        field = e.object.WhichOneof("kind")
        meta = getattr(e.object, field).metadata
        out[(field, meta.namespace, meta.name)] = meta.resource_version
    return out


FIELD = {"Node": "node", "Pod": "pod", "Service": "service", "EndpointSlice": "endpoint_slice"}


def view_of_informer(informer: Informer) -> dict[Key, int]:
    return {
        (FIELD[k], o.metadata.namespace, o.metadata.name): o.metadata.resource_version
        for k in KINDS
        for o in informer.list(k)
    }


async def test_sigkill_mid_stream_then_resume_without_loss(
    api: ApiServerProcess, rest: aiohttp.ClientSession
) -> None:
    seen: list[tuple[int, str, str]] = []  # (rv, type, name) after the first sync
    synced = asyncio.Event()

    def on_event(etype: str, kind: str, obj: Any, old: Any | None) -> None:
        if synced.is_set():
            seen.append((obj.metadata.resource_version, etype, obj.metadata.name))

    async with ClusterClient(api.grpc_target) as client:
        informer = Informer(
            client, KINDS, "test", on_event, synced.set, backoff_base_s=0.05, backoff_cap_s=0.5
        )
        task = asyncio.create_task(informer.run())
        try:
            await asyncio.wait_for(informer.wait_synced(), 20)
            first_rv = informer.last_rv
            for i in range(10):
                await post(rest, "services", service(f"before-{i}"))
            await api.kill(signal.SIGKILL)  # mid-stream: the informer's watch is open
            await wait_for(lambda: informer.state is not LinkState.SYNCED, 10, what="broken")
            await api.restart()
            for i in range(10):
                await post(rest, "services", service(f"after-{i}"))
            async with rest.delete("/api/v1/namespaces/default/services/before-3") as reply:
                assert reply.status == 200
            await post(rest, "pods", pod("p", "after-1"))

            # The store's own event log (a fresh watch's backlog) against what we were told.
            async def converged() -> bool:
                backlog, _ = await raw_stream(api.grpc_target, first_rv)
                # Writes of unwatched kinds (Events, Endpoints) move the store's rv but never
                # reach the informer (only a SYNCED may carry it past them): wait for the
                # last event it can see.
                last = max((e.resource_version for e in backlog), default=first_rv)
                await asyncio.wait_for(informer.wait_rv(last), 20)
                snapshot, _ = await raw_stream(api.grpc_target, 0)
                again, _ = await raw_stream(api.grpc_target, first_rv)
                if len(again) != len(backlog):
                    return False  # controllers still changing watched kinds: look again
                told = [(e.resource_version, e.type) for e in backlog]
                assert [(rv, _type_number(t)) for rv, t, _ in seen] == told
                assert view_of_informer(informer) == view_of_snapshot(snapshot)
                return True

            await wait_for(converged, 30, what="informer converged on the store")
            assert informer.relists == 0 and informer.reconnects >= 1
            names = {name for _, _, name in seen}
            assert {"after-0", "after-9", "before-3", "p"} <= names
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _type_number(etype: str) -> int:
    return int(pb.WatchEvent.Type.Value(etype))


class GatedClient(ClusterClient):
    """A client whose new Watch calls wait while ``gate`` is clear (the link is "down")."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.gate = asyncio.Event()
        self.gate.set()

    async def watch(
        self, kinds: Iterable[str], since_rv: int, watcher: str
    ) -> AsyncGenerator[pb.WatchEvent, None]:
        await self.gate.wait()
        async for event in super().watch(kinds, since_rv, watcher):
            yield event


async def test_restart_with_short_history_relists(tmp_path: Path) -> None:
    async with (
        apiserver_process(tmp_path, event_history=5) as api,
        rest_session(api.admin, base_url=api.rest_url) as rest,
        GatedClient(api.grpc_target) as client,
    ):
        changes: list[tuple[str, str]] = []
        informer = Informer(
            client,
            ["Service"],
            "test",
            lambda t, k, o, old: changes.append((t, o.metadata.name)),
            backoff_base_s=0.05,
            backoff_cap_s=0.5,
        )
        task = asyncio.create_task(informer.run())
        try:
            await asyncio.wait_for(informer.wait_synced(), 20)
            before = len(changes)
            client.gate.clear()  # the informer stays away until the history has moved on
            await api.kill(signal.SIGKILL)
            await wait_for(lambda: informer.state is LinkState.DISCONNECTED, 10, what="down")
            await api.restart()
            for i in range(8):  # more than the kept history
                await post(rest, "services", service(f"s{i}"))
            client.gate.set()
            await wait_for(lambda: informer.relists >= 1, 20, what="a relist")
            await wait_for(lambda: len(informer.list("Service")) >= 8 + before, 20, what="s*")
            after = changes[before:]
            assert sorted(after) == [("ADDED", f"s{i}") for i in range(8)]  # nothing else
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_fake_cluster_runs_scheduled_pods(
    api: ApiServerProcess, rest: aiohttp.ClientSession
) -> None:
    async with fake_cluster(api, nodes=2) as cluster:
        for i in range(4):
            await post(rest, "pods", pod(f"web-{i}", "web"))

        async def all_running() -> list[dict[str, Any]] | None:
            async with rest.get("/api/v1/namespaces/default/pods") as reply:
                items = (await reply.json())["items"]
            ok = [p for p in items if (p.get("status") or {}).get("phase") == "Running"]
            return ok if len(ok) == 4 else None

        pods = await wait_for(all_running, 20, what="4 pods Running")
        for p in pods:
            node = cluster.node(p["spec"]["nodeName"])
            assert node.node is not None
            cidr = node.node.pod_cidr.rsplit(".", 1)[0]
            assert p["status"]["podIP"].startswith(cidr + ".")
            ready = [c for c in p["status"]["conditions"] if c["type"] == "Ready"]
            assert ready[0]["status"] == "True"
        async with rest.get("/api/v1/nodes") as reply:
            nodes = (await reply.json())["items"]
        assert sorted(n["metadata"]["name"] for n in nodes) == ["node-1", "node-2"]
