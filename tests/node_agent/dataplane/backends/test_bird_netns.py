"""Real BGP: BIRD 2 speakers configured by ``bird.render`` in two network namespaces made for
the test (underlay 10.250.9.1 and .2 on a veth pair; nothing leaves them).  Sessions come up,
each node learns the other's podCIDR over BGP (in BIRD and in the kernel table BIRD writes),
and a frozen node's route is withdrawn when the hold timer expires; the figure is printed."""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from knemu.node_agent.dataplane.backends import bird
from knemu.testing import wait_until

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(shutil.which("bird") is None, reason="BIRD 2 not installed (bird2)"),
]
IPS = ("10.250.9.1", "10.250.9.2")
HOLD_S = 3


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, timeout=30)


class Speakers:
    def __init__(self, root: Path, bfd_interval_ms: int = 0) -> None:
        tag = secrets.token_hex(3)
        self.bfd_interval_ms = bfd_interval_ms
        self.ns = (f"kbgp-{tag}-1", f"kbgp-{tag}-2")
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []

    def ctl(self, i: int) -> str:
        return str(self.root / f"bird-{i}.ctl")

    def birdc(self, i: int, *cmd: str) -> str:
        return _run("birdc", "-s", self.ctl(i), *cmd).stdout

    def start(self) -> None:
        a, b = self.ns
        for cmd in (
            ["ip", "netns", "add", a], ["ip", "netns", "add", b],
            ["ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
             "netns", b],
        ):  # fmt: skip
            assert _run(*cmd).returncode == 0, cmd
        for i, ns in enumerate(self.ns):
            for cmd in (["link", "set", "lo", "up"], ["addr", "add", f"{IPS[i]}/24", "dev",
                        "eth0"], ["link", "set", "eth0", "up"]):  # fmt: skip
                assert _run("ip", "-n", ns, *cmd).returncode == 0
            cfg = bird.BgpConfig(f"node-{i + 1}", IPS[i], f"10.244.{i + 1}.0/24", IPS,
                                 hold_time_s=HOLD_S,
                                 bfd_interval_ms=self.bfd_interval_ms)  # fmt: skip
            conf = self.root / f"bird-{i}.conf"
            conf.write_text(bird.render(cfg))
            self.procs.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, "bird", "-f", "-c", str(conf), "-s", self.ctl(i)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait(10)
        for ns in self.ns:
            _run("ip", "netns", "del", ns)


@pytest.fixture
def speakers(tmp_path: Path) -> Iterator[Speakers]:
    s = Speakers(tmp_path)
    try:
        s.start()
        yield s
    finally:
        s.close()


def learned(s: Speakers, i: int) -> list[bird.Route]:
    return bird.parse_routes(s.birdc(i, "show", "route", "where", "source", "=", "RTS_BGP"))


def test_sessions_establish_and_pod_cidrs_are_learned_then_withdrawn(speakers: Speakers) -> None:
    s = speakers
    wait_until(
        lambda: all(
            [x.established for x in bird.parse_protocols(s.birdc(i, "show", "protocols"))] == [True]
            for i in (0, 1)
        ),
        timeout_s=30,
        what="both BGP sessions Established",
    )
    wait_until(lambda: [(r.prefix, r.via) for r in learned(s, 0)] == [("10.244.2.0/24", IPS[1])],
               timeout_s=15, what="node-1 learns 10.244.2.0/24 via node-2")  # fmt: skip
    assert [(r.prefix, r.via) for r in learned(s, 1)] == [("10.244.1.0/24", IPS[0])]
    kernel = _run("ip", "-n", s.ns[0], "route", "show", "proto", "bird").stdout
    assert f"10.244.2.0/24 via {IPS[1]} dev eth0" in kernel
    # Freeze node-2's speaker (a hung node: its TCP stays open, keepalives stop).
    s.procs[1].send_signal(signal.SIGSTOP)
    start = time.monotonic()
    wait_until(lambda: not learned(s, 0), timeout_s=HOLD_S * 4, what="withdrawal after hold")
    took = time.monotonic() - start
    print(f"\nBGP: frozen peer's route withdrawn after {took:.1f} s (hold time {HOLD_S} s)")
    assert HOLD_S - 1.5 <= took <= HOLD_S + 2
    assert "10.244.2.0/24" not in _run("ip", "-n", s.ns[0], "route").stdout
    # Killed outright, the kernel closes its TCP session: withdrawal is immediate.
    s.procs[1].send_signal(signal.SIGCONT)
    wait_until(lambda: bool(learned(s, 0)), timeout_s=20, what="re-announced after thaw")
    s.procs[1].kill()
    start = time.monotonic()
    wait_until(lambda: not learned(s, 0), timeout_s=HOLD_S * 4, what="withdrawal after kill")
    print(f"BGP: killed peer's route withdrawn after {time.monotonic() - start:.2f} s")


@pytest.fixture
def bfd_speakers(tmp_path: Path) -> Iterator[Speakers]:
    s = Speakers(tmp_path, bfd_interval_ms=BFD_MS)
    try:
        s.start()
        yield s
    finally:
        s.close()


BFD_MS = 100


def test_with_bfd_a_frozen_peer_is_withdrawn_in_a_fraction_of_the_hold_time(
    bfd_speakers: Speakers,
) -> None:
    s = bfd_speakers
    wait_until(lambda: bool(learned(s, 0)), timeout_s=30, what="node-1 learns node-2's podCIDR")
    wait_until(lambda: " Up " in s.birdc(0, "show", "bfd", "sessions"), timeout_s=15,
               what="the BFD session up")  # fmt: skip
    s.procs[1].send_signal(signal.SIGSTOP)
    start = time.monotonic()
    wait_until(lambda: not learned(s, 0), timeout_s=HOLD_S * 4, what="withdrawal by BFD",
               interval_s=0.05)  # fmt: skip
    took = time.monotonic() - start
    print(f"\nBGP+BFD ({BFD_MS} ms x 3): frozen peer's route withdrawn after {took:.2f} s "
          f"(hold time {HOLD_S} s)")  # fmt: skip
    assert took < HOLD_S - 1
