"""The underlay link read with iproute2 (node_agent/dataplane/underlay.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from knemu.node_agent.dataplane import underlay
from knemu.node_agent.dataplane.mtu import PodMtu, UnderlayLink

needs_ip = pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 not installed")


@needs_ip
async def test_reads_the_interface_holding_an_address_and_its_mtu() -> None:
    lo_mtu = int(Path("/sys/class/net/lo/mtu").read_text())
    assert await underlay.read_underlay_link("127.0.0.1") == UnderlayLink("lo", lo_mtu)
    assert await underlay.read_underlay_link("192.0.2.77") is None  # TEST-NET-1: nobody's


@needs_ip
async def test_pod_mtu_from_the_link_and_an_unknown_address_falls_back() -> None:
    lo_mtu = int(Path("/sys/class/net/lo/mtu").read_text())
    chosen = await underlay.resolve_pod_mtu(0, "127.0.0.1")
    assert chosen.mtu_bytes == min(lo_mtu - 50, 9000)
    assert (await underlay.resolve_pod_mtu(0, "192.0.2.77")).mtu_bytes == 1450


async def test_an_explicit_mtu_reads_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    async def must_not_run(address: str) -> UnderlayLink | None:
        raise AssertionError(f"read the underlay link for {address} although --mtu was set")

    monkeypatch.setattr(underlay, "read_underlay_link", must_not_run)
    assert await underlay.resolve_pod_mtu(1300, "127.0.0.1") == PodMtu(
        1300, "set explicitly (--mtu)"
    )
