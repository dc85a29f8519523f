"""The node's host TUN knemu0: plan (pure) and the real device in a throwaway namespace."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from knemu.errors import ConfigError
from knemu.node_agent.dataplane.host import configure_commands, host_plan

REPO = Path(__file__).resolve().parents[3]


def test_plan_of_node_3() -> None:
    plan = host_plan("10.244.3.0/24")
    assert (plan.address, plan.prefix_len, plan.mtu_bytes) == ("10.244.3.1", 24, 1450)
    assert plan.routes == ("10.244.0.0/16", "10.96.0.0/12")
    cmds = configure_commands(plan)
    assert ["route", "replace", "10.96.0.0/12", "dev", "knemu0", "src", "10.244.3.1"] in cmds
    with pytest.raises(ConfigError):
        host_plan("10.244.3.0/31")
    with pytest.raises(ConfigError):
        host_plan("not-a-cidr")


@pytest.fixture
def netns() -> Iterator[str]:
    name = "kt" + secrets.token_hex(4)
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


SCRIPT = """
import asyncio, subprocess
from knemu.node_agent.dataplane.host import HostInterface, host_plan
async def main():
    host = await HostInterface.create(host_plan("10.244.7.0/24"))
    print(subprocess.run(["ip", "-o", "addr", "show", "knemu0"], capture_output=True,
                         text=True).stdout)
    print(subprocess.run(["ip", "route"], capture_output=True, text=True).stdout)
    print(subprocess.run(["ip", "-o", "link", "show", "knemu0"], capture_output=True,
                         text=True).stdout)
    host.close()
    gone = subprocess.run(["ip", "link", "show", "knemu0"], capture_output=True)
    print("GONE" if gone.returncode != 0 else "STILL-THERE")
asyncio.run(main())
"""


@pytest.mark.netns
def test_host_tun_is_addressed_routed_and_removed_on_close(netns: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cmd = ["ip", "netns", "exec", netns, sys.executable, "-c", SCRIPT]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert "inet 10.244.7.1/24" in out.stdout
    assert "10.244.0.0/16 dev knemu0" in out.stdout and "10.96.0.0/12 dev knemu0" in out.stdout
    assert "mtu 1450" in out.stdout
    assert out.stdout.rstrip().endswith("GONE")
