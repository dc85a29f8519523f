"""Informer against an in-process gRPC service: sync, live events, resume, relist."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from knemu import errors
from knemu.proto.client import Informer
from knemu.proto.state import LinkState
from knemu.testing import wait_for

from .stack import NOW, Stack, close_stack, make_stack, pod, service

Seen = list[tuple[str, str, str, int, int | None]]


class Recorder:
    """on_event / on_synced targets that remember what they were told."""

    def __init__(self) -> None:
        self.events: Seen = []
        self.synced = 0

    async def on_event(self, etype: str, kind: str, obj: Any, old: Any | None) -> None:
        await asyncio.sleep(0)  # an async handler, awaited in order
        old_rv = None if old is None else old.metadata.resource_version
        self.events.append((etype, kind, obj.metadata.name, obj.metadata.resource_version, old_rv))

    def on_synced(self) -> None:
        self.synced += 1


@asynccontextmanager
async def running(informer: Informer) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(informer.run(), name="informer")
    try:
        yield task
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def store_view(stack: Stack, kinds: tuple[str, ...]) -> dict[tuple[str, str, str], int]:
    return {
        (k, o["metadata"].get("namespace", ""), o["metadata"]["name"]): int(
            o["metadata"]["resourceVersion"]
        )
        for k in kinds
        for o in stack.store.list(k)
    }


def cache_view(informer: Informer, kinds: tuple[str, ...]) -> dict[tuple[str, str, str], int]:
    return {
        (k, o.metadata.namespace, o.metadata.name): o.metadata.resource_version
        for k in kinds
        for o in informer.list(k)
    }


def make_informer(stack: Stack, rec: Recorder, kinds: tuple[str, ...] = ("Pod",)) -> Informer:
    return Informer(
        stack.client, kinds, "test", rec.on_event, rec.on_synced, backoff_base_s=0.02, seed=1
    )


async def test_sync_then_live_events_with_old(stack: Stack) -> None:
    a = stack.store.create(pod("a"), NOW)
    stack.store.create(service("s"), NOW)
    rec = Recorder()
    informer = make_informer(stack, rec)
    async with running(informer):
        await asyncio.wait_for(informer.wait_synced(), 10)
        assert informer.state is LinkState.SYNCED and rec.synced == 1
        a_rv = int(a["metadata"]["resourceVersion"])
        assert rec.events == [("ADDED", "Pod", "a", a_rv, None)]
        a["metadata"]["labels"] = {"v": "2"}
        a2 = stack.store.update(a, NOW)
        stack.store.delete("Pod", "default", "a", NOW)
        await asyncio.wait_for(informer.wait_rv(stack.store.resource_version), 10)
        a2_rv = int(a2["metadata"]["resourceVersion"])
        assert rec.events[1:] == [
            ("MODIFIED", "Pod", "a", a2_rv, a_rv),
            ("DELETED", "Pod", "a", stack.store.resource_version, a2_rv),
        ]
        assert informer.get("Pod", "default", "a") is None and informer.list("Pod") == []
        stats = informer.statistics()
        assert stats["state"] == "SYNCED" and stats["objects"] == 0
        assert stats["last_rv"] == stack.store.resource_version


async def test_resume_after_server_restart_without_loss_or_duplicates(stack: Stack) -> None:
    for name in ("a", "b", "c"):
        stack.store.create(pod(name), NOW)
    rec = Recorder()
    informer = make_informer(stack, rec)
    async with running(informer):
        await asyncio.wait_for(informer.wait_synced(), 10)
        await stack.server.stop(None)
        await wait_for(lambda: informer.state is not LinkState.SYNCED, 10, what="stream broken")
        # Changes while the watcher is away arrive as the backlog, in order.
        b = stack.store.get("Pod", "default", "b")
        assert b is not None
        b["metadata"]["labels"] = {"v": "2"}
        expected = [
            ("DELETED", "a", stack.store.delete("Pod", "default", "a", NOW)),
            ("MODIFIED", "b", stack.store.update(b, NOW)),
            ("ADDED", "d", stack.store.create(pod("d"), NOW)),
        ]
        await stack.restart()
        await asyncio.wait_for(informer.wait_rv(stack.store.resource_version), 10)
        stack.store.create(pod("e"), NOW)  # and live ones after the backlog
        await asyncio.wait_for(informer.wait_rv(stack.store.resource_version), 10)
    got = [(t, name, rv) for t, _, name, rv, _ in rec.events[3:]]
    want = [(t, name, int(o["metadata"]["resourceVersion"])) for t, name, o in expected]
    assert got == [*want, ("ADDED", "e", stack.store.resource_version)]
    assert informer.relists == 0 and informer.reconnects >= 1 and rec.synced == 2
    assert cache_view(informer, ("Pod",)) == store_view(stack, ("Pod",))


async def test_relist_when_history_is_gone_emits_only_real_changes(tmp_path: Path) -> None:
    stack = await make_stack(tmp_path, history=3)
    try:
        for name in ("keep", "change", "gone"):
            stack.store.create(pod(name), NOW)
        rec = Recorder()
        informer = make_informer(stack, rec, ("Pod", "Service"))
        async with running(informer):
            await asyncio.wait_for(informer.wait_synced(), 10)
            await stack.server.stop(None)
            await wait_for(lambda: informer.state is not LinkState.SYNCED, 10, what="broken")
            change = stack.store.get("Pod", "default", "change")
            assert change is not None
            change["metadata"]["labels"] = {"v": "2"}
            stack.store.update(change, NOW)
            stack.store.delete("Pod", "default", "gone", NOW)
            for i in range(5):  # push the informer's rv out of the kept history
                stack.store.create(service(f"s{i}"), NOW)
                stack.store.delete("Service", "default", f"s{i}", NOW)
            stack.store.create(pod("fresh"), NOW)
            await stack.restart()
            await asyncio.wait_for(informer.wait_rv(stack.store.resource_version), 10)
        after = [(t, name) for t, _, name, _, _ in rec.events[3:]]
        assert after == [("DELETED", "gone"), ("MODIFIED", "change"), ("ADDED", "fresh")]
        assert informer.relists == 1
        assert cache_view(informer, ("Pod", "Service")) == store_view(stack, ("Pod", "Service"))
    finally:
        await close_stack(stack)


async def test_failing_handler_does_not_stop_the_informer(stack: Stack) -> None:
    seen: list[str] = []

    def on_event(etype: str, kind: str, obj: Any, old: Any | None) -> None:
        seen.append(obj.metadata.name)
        if obj.metadata.name == "bad":
            raise RuntimeError("handler bug")

    informer = Informer(stack.client, ["Pod"], "test", on_event)
    async with running(informer):
        await asyncio.wait_for(informer.wait_synced(), 10)
        stack.store.create(pod("bad"), NOW)
        stack.store.create(pod("good"), NOW)
        await asyncio.wait_for(informer.wait_rv(stack.store.resource_version), 10)
    assert seen == ["bad", "good"] and informer.get("Pod", "default", "good") is not None


async def test_informer_rejects_unknown_kind(stack: Stack) -> None:
    with pytest.raises(errors.LocalError, match="Deployment"):
        Informer(stack.client, ["Pod", "Deployment"], "test", lambda *a: None)


async def test_informer_waits_for_a_server_that_is_not_up_yet(tmp_path: Path) -> None:
    stack = await make_stack(tmp_path)
    try:
        await stack.server.stop(None)
        stack.store.create(pod("early"), NOW)
        rec = Recorder()
        informer = make_informer(stack, rec)
        async with running(informer):
            await wait_for(lambda: informer.reconnects >= 2, 10, what="retries")
            assert informer.state is LinkState.DISCONNECTED
            await stack.restart()
            await asyncio.wait_for(informer.wait_synced(), 10)
        assert [name for _, _, name, _, _ in rec.events] == ["early"]
    finally:
        await close_stack(stack)


async def test_informer_too_slow_is_cut_off_then_relists_without_duplicates(
    tmp_path: Path,
) -> None:
    stack = await make_stack(tmp_path, queue_events=20)
    gate = asyncio.Event()
    added: list[str] = []

    async def on_event(etype: str, kind: str, obj: Any, old: Any | None) -> None:
        await gate.wait()  # a handler stuck on something slow: the informer stops reading
        if etype == "ADDED":
            added.append(obj.metadata.name)

    gate.set()
    informer = Informer(stack.client, ["Pod"], "slow", on_event, backoff_base_s=0.02, seed=3)
    try:
        async with running(informer):
            await asyncio.wait_for(informer.wait_synced(), 10)
            gate.clear()
            written = 0
            while stack.hub.statistics().overflowed == 0 and written < 5000:
                big = pod(f"p{written}")
                big["metadata"]["annotations"] = {"pad": "x" * 2000}
                stack.store.create(big, NOW)
                written += 1
                for _ in range(5):
                    await asyncio.sleep(0)  # yield: let the server's writer run
            assert stack.hub.statistics().overflowed == 1
            gate.set()
            await wait_for(lambda: informer.relists == 1, 20, what="relist")
            await asyncio.wait_for(informer.wait_rv(stack.store.resource_version), 20)
        assert sorted(added) == sorted(f"p{i}" for i in range(written))  # each exactly once
        assert cache_view(informer, ("Pod",)) == store_view(stack, ("Pod",))
    finally:
        await close_stack(stack)
