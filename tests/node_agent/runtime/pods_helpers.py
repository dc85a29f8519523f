"""Helpers for the pod runtime tests (imported by conftest.py and the tests)."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from knemu.node_agent.runtime.pods import PodRuntime, PodStatus
from knemu.proto import knemu_pb2 as pb
from knemu.testing import wait_for

T = TypeVar("T")


@dataclass
class Harness:
    rt: PodRuntime
    prefix: str
    node: str
    state_dir: Path
    statuses: list[PodStatus] = field(default_factory=list)
    events: list[tuple[str, str, str, str]] = field(default_factory=list)

    def pod(
        self,
        name: str,
        *containers: pb.Container,
        restart_policy: str = "Always",
        **kw: object,
    ) -> pb.Pod:
        meta = pb.ObjectMeta(name=name, namespace="default", uid=str(uuid.uuid4()))
        return pb.Pod(
            metadata=meta, containers=list(containers), restart_policy=restart_policy,
            node_name=self.node, **kw,  # type: ignore[arg-type]
        )  # fmt: skip

    async def wait_status(
        self, key: str, cond: Callable[[PodStatus], bool], timeout_s: float = 15.0
    ) -> PodStatus:
        return await wait_for(lambda: _matching(self.rt.status(key), cond), timeout_s, what=key)

    async def sh(self, key: str, script: str) -> tuple[int, str, str]:
        proc = await self.rt.exec(key, "", ["sh", "-c", script], stdin=False)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()


def _matching(status: PodStatus | None, cond: Callable[[PodStatus], bool]) -> PodStatus | None:
    return status if status is not None and cond(status) else None


def run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout


def alive(pid: int) -> bool:
    """True while ``pid`` is a live (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
