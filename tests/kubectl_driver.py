"""The real kubectl as the test suites drive it (local and compose clusters alike).

kubectl runs as a subprocess with the kubeconfig the cluster wrote (never ~/.kube/config) and
its own discovery cache.  ``KUBECTL`` is None when kubectl is not on PATH; suites skip then.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from localcluster import read_until

from knemu.testing import free_port

KUBECTL = shutil.which("kubectl")
WEBSOCKETS = {"websocket": "true", "spdy": "false"}  # kubectl's switches for its transports


class Kubectl:
    def __init__(self, kubeconfig: Path, cache: Path) -> None:
        self.kubeconfig, self.cache = kubeconfig, cache

    def argv(self, *args: str) -> list[str]:
        return [str(KUBECTL), "--kubeconfig", str(self.kubeconfig), "--cache-dir",
                str(self.cache), *args]  # fmt: skip

    def __call__(
        self, *args: str, check: bool = True, input_text: str | None = None, timeout_s: float = 60,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        proc = subprocess.run(self.argv(*args), capture_output=True, text=True, input=input_text,
                              timeout=timeout_s, check=False,
                              env={**os.environ, **(env or {})})  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} -> {proc.returncode}\n"
                                 f"{proc.stdout}\n{proc.stderr}")  # fmt: skip
        return proc


@contextlib.contextmanager
def port_forward(kubectl: Kubectl, transport: str, target: str, port: int) -> Iterator[int]:
    """`kubectl port-forward TARGET LOCAL:PORT` on a free host-loopback port over
    ``transport`` ("websocket" or "spdy"); yields the local port.  On the way out it checks
    kubectl reported no error and used that transport (its -v=6 log of the upgrade)."""
    local = free_port()
    env = {**os.environ, "KUBECTL_PORT_FORWARD_WEBSOCKETS": WEBSOCKETS[transport]}
    argv = kubectl.argv("port-forward", "--address", "127.0.0.1", target, f"{local}:{port}",
                        "-v=6")  # fmt: skip
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    try:
        read_until(proc, proc.stdout, rf"Forwarding from 127.0.0.1:{local} -> {port}")
        yield local
        assert proc.poll() is None, "kubectl port-forward ended early"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
        assert b"lost connection" not in err and b"an error occurred" not in err, err
        # a websocket upgrade is a GET, the SPDY upgrade a POST
        method = b"GET" if transport == "websocket" else b"POST"
        assert re.search(method + rb" \S+/pods/\S+/portforward 101 Switching Protocols", err), err


def curl(port: int, path: str) -> bytes:
    """GET http://127.0.0.1:PORT/PATH (a port-forward's local end); the body."""
    return subprocess.run(["curl", "-sSf", "--max-time", "20", f"http://127.0.0.1:{port}{path}"],
                          capture_output=True, check=True, timeout=30).stdout  # fmt: skip
