"""Issue 16 against a whole api-server: a replica storm does not stall serving, SIGTERM ends
it within the grace period, a restart on the same data recovers; slowloris connections,
unread watches and a doubling patch stay within stated bounds."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from knemu.apiserver.grpc_api import service as grpc_service
from knemu.apiserver.rest import watch
from knemu.apiserver.rest.connections import ConnectionLimits
from knemu.apiserver.rest.handlers import MAX_CASCADE_IN_REQUEST
from knemu.apiserver.server import ApiServer
from knemu.apiserver.storage.watch_quota import MAX_WATCHES_PER_CLIENT
from knemu.config import ApiServerConfig
from knemu.pki import Credentials
from knemu.proto import knemu_pb2 as pb, knemu_pb2_grpc as pb_grpc
from knemu.testing import apiserver_process, rest_session, wait_for

DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
STORM_REPLICAS = 20_000
READYZ_BOUND_S = 1.0  # worst /readyz latency while the controllers create pods
RSS_BOUND_BYTES = 150 * 1024 * 1024  # growth under 50 unread watches and a write flood


def deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            },
        },
    }


def config_for(data_dir: Path, **extra: Any) -> ApiServerConfig:
    return ApiServerConfig(
        data_dir=str(data_dir), listen="127.0.0.1:0", grpc_listen="127.0.0.1:0", **extra
    )


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def admin(server: ApiServer) -> Credentials:
    assert server.admin is not None
    return server.admin


class Raw:
    """Hand-made HTTP/1.1 over TLS as the admin (client certificate): one context, many
    connections, each sending whatever bytes the test wants."""

    def __init__(self, server: ApiServer) -> None:
        self.port = int(server.rest_url.rsplit(":", 1)[1])
        self.ssl = admin(server).ssl_context()

    async def connect(self) -> asyncio.StreamWriter:
        _, writer = await asyncio.open_connection("127.0.0.1", self.port, ssl=self.ssl)
        return writer


async def readyz_latencies(server: ApiServer, seconds: float) -> list[float]:
    latencies = []
    deadline = time.monotonic() + seconds
    async with rest_session(admin(server)) as http:
        while time.monotonic() < deadline:
            started = time.monotonic()
            async with http.get(server.rest_url + "/readyz") as resp:
                assert resp.status == 200
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.1)
    return latencies


@pytest.mark.slow
async def test_a_replica_storm_does_not_stall_readyz_and_a_restart_recovers(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    async with ApiServer(config_for(data)) as server:
        async with rest_session(admin(server)) as http:
            body = deployment("storm", STORM_REPLICAS)
            async with http.post(server.rest_url + DEPLOYMENTS, json=body) as resp:
                assert resp.status == 201
        latencies = await readyz_latencies(server, 4.0)
        assert server.store is not None
        created = len(server.store.list("Pod"))
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 3.0  # mid-storm, within the grace period
    assert max(latencies) < READYZ_BOUND_S, sorted(latencies)[-5:]
    assert created > 50  # the storm was under way
    started = time.monotonic()
    async with ApiServer(config_for(data)) as server:  # same data: starts, serves, stops
        assert time.monotonic() - started < 5.0
        latencies = await readyz_latencies(server, 1.5)
        assert max(latencies) < READYZ_BOUND_S
        assert server.store is not None and len(server.store.list("Pod")) >= created


@pytest.mark.slow
async def test_sigterm_mid_storm_exits_within_the_grace_period(tmp_path: Path) -> None:
    async with apiserver_process(tmp_path) as api:
        async with rest_session(api.admin) as http:
            body = deployment("storm", STORM_REPLICAS)
            async with http.post(api.rest_url + DEPLOYMENTS, json=body) as resp:
                assert resp.status == 201

            async def pods() -> int:
                url = api.rest_url + "/api/v1/namespaces/default/pods?limit=200"
                async with http.get(url) as resp:
                    return len((await resp.json())["items"]) >= 200

            await wait_for(pods, 30.0, what="the storm's first 200 pods")
        assert api.process is not None
        started = time.monotonic()
        api.process.send_signal(signal.SIGTERM)
        status = await asyncio.wait_for(api.process.wait(), 10.0)
        assert status == 0 and time.monotonic() - started < 5.0, api.log_tail()
        await api.start()  # a restart on the same data is ready (start waits for it)
        async with rest_session(api.admin) as http, http.get(api.rest_url + "/readyz") as r:
            assert r.status == 200


async def test_slowloris_connections_are_capped_and_timed_out(tmp_path: Path) -> None:
    limits = ConnectionLimits(max_connections=100, max_per_client=50, header_timeout_s=5.0)
    async with ApiServer(config_for(tmp_path / "data"), connection_limits=limits) as server:
        raw = Raw(server)
        held, reset = [], 0
        try:
            for _ in range(5000):  # half-sent requests from one client address
                try:
                    writer = await raw.connect()
                except ConnectionError:  # refused before the TLS handshake: reset at once
                    reset += 1
                    continue
                writer.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")
                held.append(writer)
            stats = server.connections.statistics()
            assert stats["open"] <= limits.max_per_client
            assert stats["refused"] + stats["header_timeouts"] >= 5000 - limits.max_per_client
            assert reset == stats["refused"] and stats["handshake_failures"] == 0
            # another client is still served at once
            connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0), ssl=raw.ssl)
            async with rest_session(admin(server), connector=connector) as http:
                started = time.monotonic()
                async with http.get(server.rest_url + "/readyz") as resp:
                    assert resp.status == 200
                assert time.monotonic() - started < 1.0
            await wait_for(
                lambda: server.connections.statistics()["open"] == 0,
                limits.header_timeout_s + 5.0,
                what="half-sent connections closed by the header timeout",
            )
        finally:
            for writer in held:
                writer.close()


async def test_watches_per_client_are_capped_with_429(tmp_path: Path) -> None:
    async with ApiServer(config_for(tmp_path / "data")) as server:
        url = server.rest_url + "/api/v1/namespaces/default/pods?watch=true"
        async with rest_session(admin(server), limit=0) as http:
            open_ = [await http.get(url) for _ in range(MAX_WATCHES_PER_CLIENT)]
            try:
                await wait_for(
                    lambda: all(r.status == 200 for r in open_), 5.0, what="watches open"
                )
                async with http.get(url) as resp:
                    assert resp.status == 429
                    assert (await resp.json())["reason"] == "TooManyRequests"
            finally:
                for resp in open_:
                    resp.close()

            async def one_more() -> bool:
                async with http.get(url + "&timeoutSeconds=1") as resp:
                    return resp.status == 200

            await wait_for(one_more, 5.0, what="a watch slot freed by a closed watch")


async def test_unread_watches_under_a_write_flood_stay_within_the_memory_bound(
    tmp_path: Path,
) -> None:
    """50 unread watches (25 replaying 8 MB of history from rv=1, 25 from a snapshot) while
    1,200 4 KB objects are written (the watchers' queues hold 300): RSS growth stays under
    RSS_BOUND_BYTES.  Before, every watcher decoded its own copy of the whole history up
    front (issue 16: 507 MB -> 2.2 GB); now each holds at most a page of it."""
    cfg = config_for(tmp_path / "data", watch_queue_events=300)
    async with ApiServer(cfg) as server:
        store = server.store
        assert store is not None

        def write(count: int, pad: str) -> None:
            for i in range(count):
                obj = {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {"name": f"e{i}-{store.resource_version}", "namespace": "default"},
                    "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
                    "reason": "Flood",
                    "message": pad,
                }
                store.create(obj, 1.0)

        write(250, "h" * 32768)  # 8 MB of history for the rv=1 watchers to replay
        raw = Raw(server)
        before = rss_bytes()
        writers = []
        for i in range(50):
            rv = "1" if i % 2 else "0"
            writer = await raw.connect()
            path = f"/api/v1/namespaces/default/events?watch=true&resourceVersion={rv}"
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            writers.append(writer)
        try:
            await asyncio.sleep(0.5)
            for _ in range(3):
                write(400, "f" * 4096)
                await asyncio.sleep(0.2)
            grown = rss_bytes() - before
            assert grown < RSS_BOUND_BYTES, f"RSS grew {grown / 2**20:.0f} MiB"
            assert server.hub is not None
            assert server.hub.statistics().overflowed >= 1  # slow watchers were cut off
        finally:
            for writer in writers:
                writer.close()


async def test_a_doubling_patch_stays_within_the_memory_bound(tmp_path: Path) -> None:
    async with ApiServer(config_for(tmp_path / "data")) as server:
        pods = server.rest_url + "/api/v1/namespaces/default/pods"
        body = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
        ops: list[dict[str, Any]] = [
            {"op": "add", "path": "/metadata/annotations", "value": {"a": "x" * 1000}},
            {"op": "add", "path": "/metadata/labels", "value": {"l": []}},
        ]
        ops += [{"op": "copy", "from": "/metadata/labels", "path": "/metadata/labels/l/-"}] * 31
        before = rss_bytes()
        async with rest_session(admin(server)) as http:
            async with http.post(pods, json=body) as resp:
                assert resp.status == 201
            headers = {"Content-Type": "application/json-patch+json"}
            async with http.patch(pods + "/p", data=json.dumps(ops), headers=headers) as resp:
                assert resp.status in (413, 422), await resp.text()
        assert rss_bytes() - before < RSS_BOUND_BYTES


@pytest.mark.slow
async def test_deleting_a_big_deployment_leaves_the_rest_to_the_garbage_collector(
    tmp_path: Path,
) -> None:
    async with ApiServer(config_for(tmp_path / "data")) as server:
        store = server.store
        assert store is not None
        async with rest_session(admin(server)) as http:
            async with http.post(server.rest_url + DEPLOYMENTS, json=deployment("big", 200)) as r:
                assert r.status == 201
            await wait_for(lambda: len(store.list("Pod")) == 200, 60.0, what="200 pods")
            started = time.monotonic()
            async with http.delete(server.rest_url + DEPLOYMENTS + "/big") as r:
                assert r.status == 200
            took = time.monotonic() - started
            left = len(store.list("Pod"))
        assert 200 - left <= MAX_CASCADE_IN_REQUEST and took < 2.0
        await wait_for(lambda: not store.list("Pod"), 30.0, what="the garbage collector")


async def test_a_watch_client_that_reads_nothing_is_cut_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its queue has room, but its socket is full: after WRITE_TIMEOUT_S the connection is
    aborted and the subscription freed, instead of a handler waiting forever."""
    monkeypatch.setattr(watch, "WRITE_TIMEOUT_S", 0.5)
    async with ApiServer(config_for(tmp_path / "data", watch_queue_events=1000)) as server:
        store, hub = server.store, server.hub
        assert store is not None and hub is not None
        writer = await Raw(server).connect()
        path = "/api/v1/namespaces/default/events?watch=true"
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await wait_for(lambda: hub.statistics().subscribers >= 1, 5.0, what="the watch")
        for i in range(400):  # 400 x 64 KB: more than the socket buffers hold
            event = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": f"e{i}", "namespace": "default"},
                "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
                "message": "m" * 65536,
            }
            store.create(event, 1.0)
            await asyncio.sleep(0.001)
        await wait_for(lambda: server.connections.statistics()["open"] == 0, 10.0, what="cut off")
        assert hub.statistics().subscribers == 0
        writer.close()


async def test_grpc_watches_per_peer_are_capped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(grpc_service, "MAX_WATCHES_PER_PEER", 2)
    async with (
        ApiServer(config_for(tmp_path / "data")) as server,
        grpc.aio.insecure_channel(server.grpc_target) as channel,
    ):
        stub = pb_grpc.ClusterStub(channel)  # type: ignore[no-untyped-call]
        held = [stub.Watch(pb.WatchRequest(kinds=["Pod"])) for _ in range(2)]
        for call in held:
            first = await call.read()
            assert first.type == pb.WatchEvent.SYNCED
        extra = stub.Watch(pb.WatchRequest(kinds=["Pod"]))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await extra.read()
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for call in held:
            call.cancel()
