"""knemu.testing: wait_for, the in-process api-server, FakeNode liveness."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from knemu.testing import FakeNode, apiserver_inprocess, fake_internal_ip, fake_vtep_mac, wait_for


async def test_wait_for_returns_the_value_and_accepts_async_predicates() -> None:
    calls = []

    def sync_pred() -> int:
        calls.append(1)
        return len(calls) if len(calls) >= 3 else 0

    assert await wait_for(sync_pred, 5) == 3

    async def async_pred() -> str:
        await asyncio.sleep(0)
        return "yes"

    assert await wait_for(async_pred, 5) == "yes"


async def test_wait_for_times_out_naming_what() -> None:
    with pytest.raises(TimeoutError, match="the moon"):
        await wait_for(lambda: False, 0.05, what="the moon")


def test_fake_addresses_are_loopback_and_local_macs() -> None:
    for name in ("a", "b", "node-1", "x" * 50):
        ip = fake_internal_ip(name).split(".")
        assert ip[0] == "127" and 2 <= int(ip[3]) <= 254
        first = int(fake_vtep_mac(name).split(":")[0], 16)
        assert first & 0x02 and not first & 0x01  # locally administered, unicast
    assert fake_vtep_mac("a") != fake_vtep_mac("b")


def _ready(node: dict[str, Any] | None) -> str:
    for cond in ((node or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("status"))
    return ""


async def test_fake_node_that_stops_renewing_goes_not_ready(tmp_path: Path) -> None:
    timings = {"lease_renew_s": 0.1, "node_grace_s": 0.5, "eviction_toleration_s": 30.0}
    async with (
        apiserver_inprocess(tmp_path, timings=timings) as api,
        FakeNode(api.grpc_target, name="node-3") as node,
    ):
        assert _ready(api.store.get("Node", "", "node-3")) == "True"
        node.alive = False  # as if it crashed: no lease renewals
        await wait_for(
            lambda: _ready(api.store.get("Node", "", "node-3")) != "True", 10, what="NotReady"
        )
        node.alive = True  # it comes back
        await wait_for(
            lambda: _ready(api.store.get("Node", "", "node-3")) == "True", 10, what="Ready"
        )
