"""Fixtures for the pod runtime tests: a PodRuntime with unique names, cleaned up always."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from knemu.config import AgentConfig
from knemu.node_agent.runtime import sandbox
from knemu.node_agent.runtime.pods import PodRuntime

from .pods_helpers import Harness


@contextlib.asynccontextmanager
async def make_harness(tmp_path: Path, registries: str = "") -> AsyncIterator[Harness]:
    """A PodRuntime on a unique node (``registries``: what it may pull from)."""
    prefix = "kt" + secrets.token_hex(3)
    node = "n" + secrets.token_hex(2)
    box: list[Harness] = []
    config = AgentConfig(
        state_dir=str(tmp_path / "state"), netns_prefix=prefix, registries=registries
    )
    rt = PodRuntime(
        config, node, "10.244.77.0/24", "10.244.77.1",
        on_status=lambda s: box[0].statuses.append(s),
        on_event=lambda *e: box[0].events.append(e),
        backoff_initial_s=0.05, backoff_max_s=0.2, max_grace_s=3.0,
    )  # fmt: skip
    h = Harness(rt, prefix, node, tmp_path / "state")
    box.append(h)
    try:
        yield h
    finally:
        await rt.stop_all()
        for name in sandbox.list_netns(prefix):  # a failed test must not leak namespaces
            await sandbox.clean_netns(name)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with make_harness(tmp_path) as h:
        yield h
