"""The agent's /attach websocket against a real process on this host (no namespaces needed).

The fake runner starts ``sh`` as ``containers.Runner`` does: stdin the pipe a ContainerStdin
holds, stdout and stderr appended to a log file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from knemu.errors import NotFound
from knemu.node_agent.runtime.containers import ContainerCore
from knemu.node_agent.runtime.stdin import ContainerStdin
from knemu.proto import knemu_pb2 as pb
from knemu.testing import wait_for

from .kubelet_helpers import make_kubelet_api

READER = "echo before; while read x; do echo got $x; echo err $x >&2; done; echo eof; exit 5"
PROTOCOLS = ("v5.channel.k8s.io",)


@dataclass
class FakeRunner:
    spec: pb.Container
    log_path: Path
    core: ContainerCore = field(default_factory=lambda: ContainerCore("main"))
    process: asyncio.subprocess.Process | None = None
    stdin: ContainerStdin | None = None
    log_start: int = 0

    async def start(self, script: str) -> None:
        fd = None
        if self.spec.stdin:
            self.stdin, fd = await ContainerStdin.open(self.spec.stdin_once)
        with open(self.log_path, "ab") as log:
            self.log_start = log.tell()
            self.process = await asyncio.create_subprocess_exec(
                "sh", "-c", script, stdin=fd if fd is not None else asyncio.subprocess.DEVNULL,
                stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        if fd is not None:
            os.close(fd)
        self.core.on_started(0.0, 0.0)


class FakeRuntime:
    def __init__(self) -> None:
        self.runners: dict[str, FakeRunner] = {}

    def runner(self, key: str, container: str) -> FakeRunner:
        if key not in self.runners:
            raise NotFound(f"pod {key} is not running on node node-1; check its node")
        return self.runners[key]


Make = Callable[..., Awaitable[FakeRunner]]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[str, Make]]:
    runtime = FakeRuntime()
    server = make_kubelet_api(SimpleNamespace(handles={}, runtime=runtime))
    await server.start("127.0.0.1", 0)

    async def make(pod: str, script: str = READER, stdin: bool = True, once: bool = False
                   ) -> FakeRunner:  # fmt: skip
        spec = pb.Container(name="main", stdin=stdin, stdin_once=once)
        runner = FakeRunner(spec, tmp_path / f"{pod}.log")
        await runner.start(script)
        runtime.runners[f"default/{pod}"] = runner
        return runner

    try:
        yield f"http://127.0.0.1:{server.port}", make
    finally:
        for r in runtime.runners.values():
            if r.process is not None and r.process.returncode is None:
                r.process.kill()
                await r.process.wait()
        await server.stop()


async def wait_log(runner: FakeRunner, text: bytes) -> None:
    await wait_for(lambda: text in runner.log_path.read_bytes(), 10, what=f"{text!r} in the log")


class Session:
    """One attach websocket: send stdin, collect output until a text or the status."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.out: dict[int, bytes] = {1: b"", 2: b""}
        self.status: dict[str, Any] | None = None

    async def send(self, data: bytes) -> None:
        await self.ws.send_bytes(b"\x00" + data)

    async def close_stdin(self) -> None:
        await self.ws.send_bytes(b"\xff\x00")

    async def until(self, want: bytes) -> None:
        while want not in self.out[1] and self.status is None:
            await self._next()
        assert want in self.out[1], self.out

    async def until_status(self) -> dict[str, Any]:
        while self.status is None:
            await self._next()
        return self.status

    async def _next(self) -> None:
        msg = await asyncio.wait_for(self.ws.receive(), 10)
        assert msg.type == aiohttp.WSMsgType.BINARY, msg
        if msg.data[0] == 3:
            self.status = json.loads(msg.data[1:])
        else:
            self.out[msg.data[0]] += msg.data[1:]


@contextlib.asynccontextmanager
async def attach(base: str, pod: str, **query: str) -> AsyncIterator[Session]:
    params = {"stdout": "true"} | query
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(
            f"{base}/attach/default/{pod}/main", params=params, protocols=PROTOCOLS
        ) as ws,  # fmt: skip
    ):
        yield Session(ws)


async def test_stdin_once_session_output_from_now_and_exit_status(env: tuple[str, Make]) -> None:
    base, make = env
    runner = await make("p", once=True)
    await wait_log(runner, b"before\n")
    async with attach(base, "p", stdin="true") as s:
        await s.send(b"one\n")
        await s.until(b"err one\n")
        await s.close_stdin()  # stdinOnce: the container's stdin closes with ours
        status = await s.until_status()
        assert s.out[1] == b"got one\nerr one\neof\n"  # both streams, from the attach on
        assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "5"}]
        assert (await asyncio.wait_for(s.ws.receive(), 10)).type in (
            aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
        )  # fmt: skip


async def test_from_start_replays_the_current_run(env: tuple[str, Make]) -> None:
    base, make = env
    runner = await make("p", script="echo old; exit 0")
    assert runner.process is not None
    await runner.process.wait()
    runner = await make("p", script="echo before; read x; echo $x")  # the same log file
    await wait_log(runner, b"before\n")
    async with attach(base, "p", stdin="true", fromStart="true") as s:
        await s.send(b"x\n")
        status = await s.until_status()
        assert (s.out[1], status["status"]) == (b"before\nx\n", "Success")


async def test_without_stdin_once_stdin_outlives_sessions(env: tuple[str, Make]) -> None:
    base, make = env
    runner = await make("p")
    for word in (b"one", b"two"):
        async with attach(base, "p", stdin="true") as s:
            await s.send(word + b"\n")
            await s.close_stdin()  # ends our stdin only: the process never sees EOF
            await s.until(b"got " + word)
    for _ in range(2):  # a watching session that leaves changes nothing either
        async with attach(base, "p", stderr="true", stdout="false") as s:
            pass
    assert runner.process is not None and runner.process.returncode is None
    async with attach(base, "p", stderr="true", stdout="false") as s:
        runner.process.send_signal(signal.SIGKILL)
        status = await s.until_status()
        assert status["details"]["causes"][0]["message"] == "137"


async def test_disconnect_ends_a_stdin_once_session(env: tuple[str, Make]) -> None:
    base, make = env
    runner = await make("p", once=True)
    async with attach(base, "p", stdin="true") as s:
        await s.send(b"last\n")
        await s.until(b"got last\n")
    assert runner.process is not None
    assert await asyncio.wait_for(runner.process.wait(), 10) == 5  # it saw EOF
    assert runner.log_path.read_bytes().endswith(b"eof\n")


async def test_refusals(env: tuple[str, Make]) -> None:
    base, make = env
    await make("nostdin", script="sleep 30", stdin=False)
    done = await make("done", script="true")
    assert done.process is not None
    await done.process.wait()
    cases = [
        ("nostdin", {"stdin": "true"}, 400, "stdin is /dev/null"),
        ("nostdin", {}, 400, "at least 1 of stdin, stdout, stderr"),
        ("ghost", {"stdout": "true"}, 404, "not running on node node-1"),
        ("done", {"stdout": "true"}, 400, "it is terminated, not running"),
    ]
    async with aiohttp.ClientSession() as http:
        for pod, query, code, text in cases:
            async with http.get(f"{base}/attach/default/{pod}/main", params=query) as resp:
                body = await resp.json()
                assert (resp.status, body["kind"]) == (code, "Status")
                assert text in body["message"], body
