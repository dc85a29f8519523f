"""The agent as a process: SIGTERM while it still waits for an absent api-server ends it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from localcluster import REPO

from knemu.testing import wait_until


def test_sigterm_during_registration_exits_cleanly(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on: the api-server is "down"
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "agent.log"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "knemu.cli", "agent", "--apiserver", f"127.0.0.1:{port}",
             "--underlay-ip", "127.0.0.1", "--state-dir", str(tmp_path / "state"),
             "--kubelet-port", "0"],
            stdout=out, stderr=out, env=env,
        )  # fmt: skip
    try:
        wait_until(
            lambda: b"registration failed" in log.read_bytes(), 30, what="a failed registration"
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
