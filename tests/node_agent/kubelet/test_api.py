"""The agent's HTTP API against a fake agent: exec channel protocol, logs, flows, chaos, table."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from knemu.errors import NotFound
from knemu.node_agent.cni.hostports import HostPorts
from knemu.node_agent.dataplane.faults import Impairments
from knemu.node_agent.dataplane.flows import FlowLog
from knemu.node_agent.events import POINT_FROM_POD, FiveTuple, FlowForwarded
from knemu.node_agent.kubelet import metrics
from knemu.node_agent.kubelet.api import MAX_STREAMS, KubeletApi
from knemu.node_agent.kubelet.logs import LogOptions, select
from knemu.node_agent.kubelet.responses import exit_status
from knemu.node_agent.runtime.log_index import LogIndex
from knemu.testing import wait_for

from .kubelet_helpers import make_kubelet_api


class FakeRuntime:
    def __init__(self, logs: Path) -> None:
        self.logs = logs

    async def exec(
        self, key: str, container: str, argv: list[str], stdin: bool
    ) -> asyncio.subprocess.Process:
        if key != "default/web":
            raise NotFound(f"pod {key} is not running on node node-1")
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

    def log_path(self, key: str, container: str) -> Path:
        return self.logs

    def runner(self, key: str, container: str) -> SimpleNamespace:
        """A container that ran twice: "one\n" was its first run's output."""
        if key != "default/web":
            raise NotFound(f"pod {key} is not running on node node-1")
        return SimpleNamespace(
            log_path=self.logs, log_start=4, previous_start=0, log_index=LogIndex(),
            spec=SimpleNamespace(name=container),
        )  # fmt: skip


class FakeRouter:
    def table_snapshot(self) -> dict[str, Any]:
        return {"peers": [], "services": [{"key": "default/web"}], "conntrack": []}

    def statistics(self) -> dict[str, int]:
        return {"forwarded": 3, "drop_no_route": 2, "conntrack_entries": 1}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[KubeletApi, str, Any]]:
    log = tmp_path / "c.log"
    log.write_text("one\ntwo\nthree\n")
    router, faults, flows = FakeRouter(), Impairments(seed=1), FlowLog()
    pods = SimpleNamespace(runtime=FakeRuntime(log), handles={})
    hostports = HostPorts(lambda *event: None)

    def table() -> dict[str, Any]:
        return {**router.table_snapshot(), "node": "node-1"}

    def text() -> str:
        return metrics.render(
            "node-1", router.statistics(), 0, {}, faults.statistics(), flows.statistics(),
            None, {"hostport": hostports.stats}, 0,
        )  # fmt: skip

    server = make_kubelet_api(pods, flows=flows, faults=faults, table=table, metrics=text)
    agent = SimpleNamespace(flows=flows, faults=faults, pods=pods)
    await server.start("127.0.0.1", 0)
    try:
        yield server, f"http://127.0.0.1:{server.port}", agent
    finally:
        await server.stop()


def test_exit_status_matches_kubelet() -> None:
    assert json.loads(exit_status(0))["status"] == "Success"
    failure = json.loads(exit_status(2))
    assert failure["reason"] == "NonZeroExitCode"
    assert failure["details"]["causes"] == [{"reason": "ExitCode", "message": "2"}]
    assert select(b"a\nb\nc\n", 0, None, LogOptions(tail_lines=2)) == b"b\nc\n"
    assert select(b"a\n", 0, None, LogOptions(tail_lines=0)) == b""


async def exec_ws(base: str, query: list[tuple[str, str]], stdin: bytes | None) -> dict[int, bytes]:
    out: dict[int, bytes] = {1: b"", 2: b"", 3: b""}
    async with (
        aiohttp.ClientSession() as s,
        s.ws_connect(
            f"{base}/exec/default/web/main", params=query, protocols=("v4.channel.k8s.io",)
        ) as ws,  # fmt: skip
    ):
        assert ws.protocol == "v4.channel.k8s.io"
        if stdin is not None:
            await ws.send_bytes(b"\x00" + stdin)
            await ws.send_bytes(bytes([255, 0]))
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                out[msg.data[0]] += msg.data[1:]
    return out


async def test_exec_streams_channels_and_exit_status(api: tuple[KubeletApi, str, Any]) -> None:
    _, base, _ = api
    cmd = [("command", "sh"), ("command", "-c"), ("command", "echo out; echo err >&2; exit 3")]
    out = await asyncio.wait_for(exec_ws(base, cmd, None), 10)
    assert out[1] == b"out\n" and out[2] == b"err\n"
    assert json.loads(out[3])["details"]["causes"][0]["message"] == "3"


async def test_exec_stdin_is_closed_by_the_v5_close_signal(
    api: tuple[KubeletApi, str, Any],
) -> None:
    _, base, _ = api
    out = await asyncio.wait_for(exec_ws(base, [("command", "cat"), ("stdin", "1")], b"hi"), 10)
    assert out[1] == b"hi" and json.loads(out[3])["status"] == "Success"


async def test_exec_unknown_pod_is_a_status_404(api: tuple[KubeletApi, str, Any]) -> None:
    _, base, _ = api
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{base}/exec/default/nope/main?command=ls") as r,
    ):
        assert r.status == 404
        assert "not running" in (await r.json())["message"]


async def test_streams_are_bounded_and_counted_back_down(
    api: tuple[KubeletApi, str, Any],
) -> None:
    server, base, _ = api
    cmd = [("command", "true")]
    await asyncio.wait_for(exec_ws(base, cmd, None), 10)
    assert server.open_streams == 0  # the finished exec gave its slot back
    server.open_streams = MAX_STREAMS
    try:
        for path in ("exec/default/web/main?command=ls", "portForward/default/web?port=80"):
            async with aiohttp.ClientSession() as s, s.get(f"{base}/{path}") as r:
                assert r.status == 429
                body = await r.json()
                assert body["reason"] == "TooManyRequests" and "retry" in body["message"]
    finally:
        server.open_streams = 0


async def test_logs_tail_and_healthz(api: tuple[KubeletApi, str, Any]) -> None:
    _, base, _ = api
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/containerLogs/default/web/main?tailLines=2") as r:
            assert await r.text() == "two\nthree\n"
        async with s.get(f"{base}/containerLogs/default/web/main") as r:
            assert await r.text() == "two\nthree\n"  # the current run only
        async with s.get(f"{base}/containerLogs/default/web/main?previous=true") as r:
            assert await r.text() == "one\n"
        async with s.get(f"{base}/containerLogs/default/web/main?limitBytes=5") as r:
            assert await r.text() == "two\nt"
        async with s.get(f"{base}/containerLogs/default/web/main?limitBytes=0") as r:
            assert r.status == 400 and "limitBytes" in (await r.json())["message"]
        async with s.get(f"{base}/containerLogs/default/web/main?sinceTime=never") as r:
            assert r.status == 400 and "sinceTime" in (await r.json())["message"]
        async with s.get(f"{base}/healthz") as r:
            assert await r.text() == "ok"


async def test_flows_filter_and_follow(api: tuple[KubeletApi, str, Any]) -> None:
    _, base, agent = api
    loop = asyncio.get_running_loop()

    def event(sport: int) -> FlowForwarded:
        flow = FiveTuple("TCP", "10.244.1.5", sport, "10.244.2.6", 80)
        return FlowForwarded(loop.time(), "node-1", POINT_FROM_POD, flow)

    agent.flows.append(event(1111))
    agent.flows.append(event(2222))
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/flows?ip=10.244.1.5&port=2222") as r:
            lines = [json.loads(x) for x in (await r.text()).splitlines()]
        assert [e["flow"]["src_port"] for e in lines] == [2222]
        assert abs(lines[0]["time"] - __import__("time").time()) < 60  # wall clock
        async with s.get(f"{base}/flows?follow=true&port=3333&limit=0") as r:
            agent.flows.append(event(3333))
            line = await asyncio.wait_for(r.content.readline(), 5)
            assert json.loads(line)["summary"] == "TCP 10.244.1.5:3333 -> 10.244.2.6:80"


async def test_chaos_add_list_clear_and_reject(api: tuple[KubeletApi, str, Any]) -> None:
    _, base, agent = api
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{base}/chaos", json={"peer": "node-2", "loss_pct": 50}) as r:
            assert r.status == 201 and (await r.json())["impairments"][0]["peer"] == "node-2"
        async with s.post(f"{base}/chaos", json={"loss_pct": 500}) as r:
            body = await r.json()
            assert r.status == 422 and "loss_pct" in body["message"]
        async with s.delete(f"{base}/chaos?peer=node-2") as r:
            assert (await r.json())["removed"] == 1
        assert not agent.faults


async def test_table_and_metrics(api: tuple[KubeletApi, str, Any]) -> None:
    _, base, _ = api
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/table") as r:
            table = await r.json()
        assert table["node"] == "node-1" and table["services"] == [{"key": "default/web"}]
        async with s.get(f"{base}/metrics") as r:
            text = await r.text()
    assert 'knemu_router_drops_total{node="node-1",reason="no_route"} 2' in text
    assert 'knemu_conntrack_entries{node="node-1"} 1' in text


async def test_flows_record_watches_for_a_bounded_time(api: tuple[KubeletApi, str, Any]) -> None:
    _, base, agent = api
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{base}/flows/record?seconds=0.2") as r:
            assert r.status == 200 and (await r.json())["recording_s"] == 0.2
        assert agent.flows.statistics()["flow_subscribers"] == 1
        await wait_for(lambda: agent.flows.statistics()["flow_subscribers"] == 0, 5,
                       what="the recording to end")  # fmt: skip
        async with s.post(f"{base}/flows/record?seconds=soon") as r:
            assert r.status == 400
