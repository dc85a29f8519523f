"""BgpSpeaker's reload loop with a fake ``birdc`` on PATH: a ``birdc configure`` that cannot
reach BIRD (BIRD has only just started: no control socket yet) is tried again, so a peer that
arrives at start-up is not lost and the node does not stay without a BGP session."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from knemu.node_agent.dataplane.backends import bird
from knemu.node_agent.dataplane.bgp_speaker import BgpSpeaker
from knemu.testing import wait_for

FAKE_BIRDC = """#!/bin/sh
# fails its first `configure` as birdc does without BIRD's control socket, then records each
# configuration it was asked to load; `show ...` answers nothing
log={log}
case "$*" in
  *configure*)
    if [ ! -e "$log.failed" ]; then
      : > "$log.failed"
      echo "Unable to connect to server control socket" >&2
      exit 1
    fi
    grep -c "protocol bgp" {conf} >> "$log" ;;
esac
exit 0
"""


async def test_a_reload_birdc_could_not_deliver_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "configured"
    speaker = BgpSpeaker(bird.BgpConfig("node-2", "192.168.59.12", "10.244.2.0/24", ()),
                         tmp_path / "bgp", poll_s=0.05)  # fmt: skip
    speaker.conf.parent.mkdir()
    fake = tmp_path / "bin" / "birdc"
    fake.parent.mkdir()
    fake.write_text(FAKE_BIRDC.format(log=log, conf=speaker.conf))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    speaker.set_peers({"node-1": "192.168.59.11"})  # arrives as BIRD starts
    task = asyncio.create_task(speaker._run())
    try:
        # the shell creates the file before grep writes its count: wait for the count
        await wait_for(lambda: log.exists() and log.read_text().strip(), 10,
                       what="a configure that reached BIRD")  # fmt: skip
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert (tmp_path / "configured.failed").exists()  # the first attempt failed
    assert log.read_text().split()[0] == "1"  # the retry loaded the peer's session


def test_route_reflectors_are_named_by_node_and_resolved_from_the_peers(tmp_path: Path) -> None:
    def speaker(node: str, ip: str) -> BgpSpeaker:
        cfg = bird.BgpConfig(node, ip, "10.244.9.0/24", ())
        return BgpSpeaker(cfg, tmp_path / node, reflector_nodes=("node-1",))

    peers = {"node-1": "192.168.59.11", "node-2": "192.168.59.12", "node-3": "192.168.59.13"}
    client = speaker("node-2", "192.168.59.12")
    client.set_peers({k: v for k, v in peers.items() if k != "node-2"})
    assert client.cfg.route_reflectors == ("192.168.59.11",)
    assert bird.sessions_of(client.cfg) == [("192.168.59.11", False)]  # only the reflector
    reflector = speaker("node-1", "192.168.59.11")
    assert reflector.cfg.route_reflectors == ("192.168.59.11",)
    reflector.set_peers({k: v for k, v in peers.items() if k != "node-1"})
    assert bird.sessions_of(reflector.cfg) == [("192.168.59.12", True), ("192.168.59.13", True)]
