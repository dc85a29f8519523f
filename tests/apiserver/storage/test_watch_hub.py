"""WatchHub: snapshot vs backlog, live events, bounded queues and relist on overflow."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from knemu.apiserver.storage.store import Store
from knemu.apiserver.storage.watch_hub import WatchHub
from knemu.errors import Gone

NOW = 1_700_000_000.0


def obj(kind: str, name: str) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "namespace": "default"}, "spec": {}}


async def test_snapshot_then_live_events() -> None:
    store = Store(":memory:")
    hub = WatchHub(store, queue_events=100)
    store.create(obj("Pod", "a"), NOW)
    store.create(obj("Service", "s"), NOW)
    store.create(obj("Pod", "b"), NOW)
    sub = hub.subscribe({"Pod"}, 0)
    assert [(e.type, e.obj["metadata"]["name"]) for e in sub.initial] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
    ]
    assert sub.synced_rv == 3
    store.create(obj("Service", "t"), NOW)  # other kind: filtered out
    store.delete("Pod", "default", "a", NOW)
    ev = await asyncio.wait_for(sub.next(), 5)
    assert (ev.rv, ev.type, ev.obj["metadata"]["name"]) == (5, "DELETED", "a")
    sub.close()
    assert hub.statistics().subscribers == 0


async def test_resume_from_rv_gets_backlog_without_gap() -> None:
    store = Store(":memory:")
    hub = WatchHub(store, queue_events=100)
    for i in range(5):
        store.create(obj("Pod", f"p{i}"), NOW)
    sub = hub.subscribe({"Pod"}, 2)
    assert [e.rv for e in sub.initial] == [3, 4, 5]
    store.create(obj("Pod", "p5"), NOW)
    assert (await asyncio.wait_for(sub.next(), 5)).rv == 6


async def test_empty_kinds_means_every_kind() -> None:
    store = Store(":memory:")
    hub = WatchHub(store, queue_events=10)
    store.create(obj("Pod", "a"), NOW)
    store.create(obj("Service", "s"), NOW)
    sub = hub.subscribe(set(), 0)
    assert sorted(e.kind for e in sub.initial) == ["Pod", "Service"]


def test_too_old_rv_is_gone() -> None:
    store = Store(":memory:", event_history=2)
    hub = WatchHub(store, queue_events=10)
    for i in range(5):
        store.create(obj("Pod", f"p{i}"), NOW)
    with pytest.raises(Gone, match="too old"):
        hub.subscribe({"Pod"}, 1)


async def test_slow_watcher_overflows_and_memory_stays_bounded() -> None:
    store = Store(":memory:")
    hub = WatchHub(store, queue_events=10)
    slow = hub.subscribe({"Pod"}, 0)
    fast = hub.subscribe({"Pod"}, 0)
    for i in range(10):
        store.create(obj("Pod", f"p{i}"), NOW)
        await fast.next()
    assert slow.pending() == 10
    for i in range(10, 50):
        store.create(obj("Pod", f"p{i}"), NOW)
        await fast.next()
    assert slow.pending() == 0  # queue released at overflow
    with pytest.raises(Gone, match="watcher too slow"):
        await slow.next()
    stats = hub.statistics()
    assert stats.overflowed == 1 and stats.dropped_events == 11
    assert stats.subscribers == 1  # the overflowed one no longer receives anything


async def test_next_waits_for_a_write() -> None:
    store = Store(":memory:")
    hub = WatchHub(store, queue_events=10)
    sub = hub.subscribe({"Pod"}, 0)
    waiter = asyncio.create_task(sub.next())
    await asyncio.sleep(0)  # let it block (not waiting *for* anything, just yielding)
    assert not waiter.done()
    store.create(obj("Pod", "a"), NOW)
    assert (await asyncio.wait_for(waiter, 5)).obj["metadata"]["name"] == "a"


async def test_close_wakes_a_waiting_next() -> None:
    store = Store(":memory:")
    hub = WatchHub(store, queue_events=10)
    sub = hub.subscribe({"Pod"}, 0)
    waiter = asyncio.create_task(sub.next())
    await asyncio.sleep(0)
    hub.close()
    with pytest.raises(Gone, match="shutting down"):
        await asyncio.wait_for(waiter, 5)
