"""Watch contract of knemu.v1.Cluster against Store + WatchHub + the gRPC service."""

from __future__ import annotations

import asyncio
import contextlib
import tracemalloc
from pathlib import Path
from typing import Any

import grpc
import pytest

from knemu import errors
from knemu.proto import knemu_pb2 as pb, knemu_pb2_grpc as pb_grpc
from knemu.testing import wait_for

from .stack import NOW, Stack, close_stack, make_stack, pod, service

T = pb.WatchEvent


async def collect(stack: Stack, kinds: list[str], since: int, count: int) -> list[pb.WatchEvent]:
    """The first ``count`` events of a Watch stream."""
    out: list[pb.WatchEvent] = []
    stream = stack.client.watch(kinds, since, "test")
    async with contextlib.aclosing(stream):
        async for event in stream:
            out.append(event)
            if len(out) == count:
                break
    return out


def names(events: list[pb.WatchEvent]) -> list[tuple[int, str]]:
    result = []
    for e in events:
        field = e.object.WhichOneof("kind")
        result.append((e.type, getattr(e.object, field).metadata.name if field else ""))
    return result


async def test_snapshot_synced_then_live_in_rv_order(stack: Stack) -> None:
    store = stack.store
    for name in ("b", "a"):
        store.create(pod(name), NOW)
    store.create(service("web"), NOW)
    store.create({"kind": "Namespace", "metadata": {"name": "other"}}, NOW)
    synced_rv = store.resource_version
    stream = stack.client.watch(["Pod", "Service"], 0, "test")
    async with contextlib.aclosing(stream):
        first = [await anext(stream) for _ in range(4)]
        assert names(first) == [(T.ADDED, "a"), (T.ADDED, "b"), (T.ADDED, "web"), (T.SYNCED, "")]
        assert first[3].resource_version == synced_rv
        store.create(pod("c"), NOW)
        updated = store.get("Pod", "default", "a")
        assert updated is not None
        updated["metadata"]["labels"] = {"x": "1"}
        store.update(updated, NOW)
        store.create({"kind": "Namespace", "metadata": {"name": "skipped"}}, NOW)
        store.delete("Service", "default", "web", NOW)
        live = [await anext(stream) for _ in range(3)]
    # The client went away: the server ends the handler and drops the subscription.
    await wait_for(lambda: stack.hub.statistics().subscribers == 0, 10, what="unsubscribed")
    assert names(live) == [(T.ADDED, "c"), (T.MODIFIED, "a"), (T.DELETED, "web")]
    rvs = [e.resource_version for e in live]
    assert rvs == sorted(rvs) and rvs[0] > synced_rv
    assert dict(live[1].object.pod.metadata.labels) == {"x": "1"}
    assert live[2].object.service.metadata.resource_version == rvs[2]


async def test_resume_from_middle_rv_no_loss_no_duplicates(stack: Stack) -> None:
    store = stack.store
    rvs = []
    for i in range(10):
        created = store.create(pod(f"p{i}"), NOW)
        rvs.append(int(created["metadata"]["resourceVersion"]))
        store.create(service(f"s{i}"), NOW)  # another kind interleaved: filtered out
    middle = rvs[4]
    events = await collect(stack, ["Pod"], middle, 6)
    assert [e.type for e in events] == [T.ADDED] * 5 + [T.SYNCED]
    assert [e.resource_version for e in events[:5]] == rvs[5:]
    assert names(events)[:5] == [(T.ADDED, f"p{i}") for i in range(5, 10)]
    assert events[5].resource_version == store.resource_version


async def test_every_watchable_kind_when_none_named(stack: Stack) -> None:
    stack.store.create(pod("p"), NOW)
    stack.store.create(service("s"), NOW)
    stack.store.create({"kind": "ConfigMap", "metadata": {"name": "c"}}, NOW)
    events = await collect(stack, [], 0, 3)
    assert [e.object.WhichOneof("kind") for e in events] == ["pod", "service", None]


async def test_too_old_rv_gets_relist_then_end(tmp_path: Path) -> None:
    stack = await make_stack(tmp_path, history=5)
    try:
        for i in range(20):
            stack.store.create(pod(f"p{i}"), NOW)
        events = await collect(stack, ["Pod"], 2, 100)  # ends by itself
        assert [e.type for e in events] == [T.RELIST]
        assert "too old" in events[0].message
        newer = await collect(stack, ["Pod"], stack.store.resource_version + 10, 100)
        assert [e.type for e in newer] == [T.RELIST]
    finally:
        await close_stack(stack)


def _big_pod(i: int) -> dict[str, Any]:
    obj = pod(f"big-{i}")
    obj["metadata"]["annotations"] = {"pad": "x" * 2000}
    return obj


async def test_slow_watcher_cut_off_with_relist_memory_bounded(tmp_path: Path) -> None:
    stack = await make_stack(tmp_path, queue_events=20, history=100_000)
    # A plain channel without BDP probing keeps the HTTP/2 window small (64 KiB), so the
    # server's writes block soon after the watcher stops reading.
    options = [("grpc.http2.bdp_probe", 0), ("grpc.use_local_subchannel_pool", 1)]
    try:
        async with grpc.aio.insecure_channel(stack.target, options=options) as channel:
            call = pb_grpc.ClusterStub(channel).Watch(pb.WatchRequest(kinds=["Pod"]))
            assert (await call.read()).type == T.SYNCED
            assert stack.hub.statistics().subscribers == 1
            # The watcher stops reading.  Write (bounded) until the hub gives up on it.
            written = 0
            while stack.hub.statistics().overflowed == 0 and written < 5000:
                stack.store.create(_big_pod(written), NOW)
                written += 1
                for _ in range(5):
                    await asyncio.sleep(0)  # yield: let the server's writer run
            stats = stack.hub.statistics()
            assert stats.overflowed == 1 and stats.subscribers == 0, stats
            growth = _memory_growth_during_updates(stack, 500)
            assert growth < 512 * 1024, f"{growth} bytes kept for a watcher that was cut off"
            rest = []
            while (event := await call.read()) is not grpc.aio.EOF:
                rest.append(event)
        # What was in flight arrives in order, then RELIST, then the stream ends.
        assert rest[-1].type == T.RELIST and "too slow" in rest[-1].message
        delivered = [e.resource_version for e in rest[:-1]]
        assert all(e.type == T.ADDED for e in rest[:-1])
        assert delivered == sorted(delivered) and len(delivered) < written
    finally:
        await close_stack(stack)


def _memory_growth_during_updates(stack: Stack, count: int) -> int:
    """Python heap growth while ``count`` updates of one object go nowhere."""
    obj = stack.store.create(_big_pod(-1), NOW)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            obj["metadata"]["labels"] = {"n": str(i)}
            obj = stack.store.update(obj, NOW)
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


async def test_unknown_kind_is_invalid_argument_naming_it(stack: Stack) -> None:
    with pytest.raises(errors.LocalError, match="'Deployment'"):
        await collect(stack, ["Pod", "Deployment"], 0, 1)
    with pytest.raises(errors.LocalError, match="negative"):
        await collect(stack, ["Pod"], -1, 1)


async def test_raw_status_codes(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(stack.target) as channel:
        stub = pb_grpc.ClusterStub(channel)
        call = stub.Watch(pb.WatchRequest(kinds=["Secret"]))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "'Secret'" in (info.value.details() or "")
        bad = pb.RegisterNodeRequest(internal_ip="127.0.0.2", vtep_mac="zz", vxlan_port=4789)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.RegisterNode(bad)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "vtep_mac 'zz'" in (info.value.details() or "")


async def test_unreachable_server_is_unavailable_naming_target() -> None:
    from knemu.proto.client import ClusterClient

    # Port 1 on loopback: nothing listens there (connection refused at once).
    async with ClusterClient("127.0.0.1:1") as client:
        with pytest.raises(errors.Unavailable, match=r"127\.0\.0\.1:1\b"):
            await client.renew_lease("node-1")


async def test_shutdown_ends_streams_without_relist(stack: Stack) -> None:
    stream = stack.client.watch(["Pod"], 0, "test")
    async with contextlib.aclosing(stream):
        assert (await anext(stream)).type == T.SYNCED
        stack.hub.close()  # what the api-server does when it stops
        rest = [e async for e in stream]
    assert rest == []  # the stream simply ends: watchers resume from their last rv


async def test_port_in_use_is_unavailable_naming_the_address(stack: Stack) -> None:
    from knemu.apiserver.grpc_api.service import start_grpc_server

    with pytest.raises(errors.Unavailable, match=rf"cannot listen on {stack.target}.*grpc_listen"):
        await start_grpc_server(stack.target, stack.store, stack.hub, stack.registry)


def test_each_event_is_encoded_once_for_every_watcher() -> None:
    """The api-server's cost of a change is one encoding, not one per watcher (issue 11)."""
    from knemu.apiserver.grpc_api.service import EncodedEvents, event_to_proto
    from knemu.apiserver.storage.store import StoredEvent
    from knemu.proto import knemu_pb2 as pb

    from .stack import service

    obj = service("web")
    obj["metadata"]["resourceVersion"] = "7"
    live = StoredEvent(7, "MODIFIED", "Service", obj)
    encoded = EncodedEvents(size=2)
    first = [encoded.get(live) for _ in range(100)]  # a hundred watchers
    assert encoded.encoded == 1 and all(data is first[0] for data in first)
    assert pb.WatchEvent.FromString(first[0]) == event_to_proto(live)
    snapshot = StoredEvent(7, "ADDED", "Service", obj)  # a new watcher's list: another message
    assert pb.WatchEvent.FromString(encoded.get(snapshot)).type == pb.WatchEvent.ADDED
    for rv in (8, 9):  # bounded: the oldest encodings go
        encoded.get(StoredEvent(rv, "MODIFIED", "Service", obj))
    encoded.get(live)
    assert encoded.encoded == 5
