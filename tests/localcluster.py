"""Helpers for the tests that run a whole local cluster (`knemu up`, marker ``netns``): unique
names and subnets, and ``LocalCluster``, which drives the cluster through the real CLI and REST."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import secrets
import selectors
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from knemu.testing import wait_until


def unique_name() -> str:
    """A cluster name no concurrent test uses: kt + 6 random hex digits (8 characters)."""
    return "kt" + secrets.token_hex(3)


def unique_subnet() -> str:
    """A /24 under 192.168.0.0/16 that no interface or route of this machine touches."""
    used = subprocess.run(
        ["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True, check=False
    ).stdout
    nets = []
    for line in used.splitlines():
        word = line.split()[0] if line.split() else ""
        if word.startswith("192.168."):
            try:
                nets.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                continue
    for _ in range(200):
        candidate = ipaddress.ip_network(f"192.168.{100 + secrets.randbelow(150)}.0/24")
        if not any(candidate.overlaps(n) for n in nets):
            return str(candidate)
    raise RuntimeError("no free 192.168.x.0/24 found for a test cluster")


# -- a running local cluster, driven through the real CLI --------------------------------------

REPO = Path(__file__).resolve().parents[1]


class LocalCluster:
    """`knemu up` in a unique name and /24; every call goes through the real CLI or REST."""

    def __init__(
        self, state_root: Path, nodes: int = 3, proxy_mode: str = "iptables",
        backend: str = "vxlan", mtu: int = 1500, tun_offload: bool = False,
    ) -> None:  # fmt: skip
        self.tun_offload = tun_offload  # `knemu up --tun-offload`
        self.name = unique_name()
        self.backend = backend
        self.mtu = mtu  # of the node network (`knemu up --mtu`)
        self.subnet = unique_subnet()
        self.nodes = nodes
        self.state_root = state_root
        self.proxy_mode = proxy_mode
        net = ipaddress.ip_network(self.subnet)
        self.host_ip = str(net.network_address + 1)
        self.server = f"http://{self.host_ip}:6443"
        self.kubeconfig = state_root / f"kubeconfig-{self.name}"

    def node_ip(self, n: int) -> str:
        return str(ipaddress.ip_network(self.subnet).network_address + 10 + n)

    def node_ns(self, n: int) -> str:
        return f"knemu-{self.name}-node-{n}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO / "src")
        env["KNEMU_SERVER"] = self.server
        env["KUBECONFIG"] = str(self.kubeconfig)  # never the user's own ~/.kube/config
        return env

    def knemu(self, *args: str, timeout_s: float = 60, check: bool = True,
              input_text: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-m", "knemu.cli", *args], capture_output=True, text=True,
            env=self.env(), timeout=timeout_s, input=input_text, check=False,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(f"knemu {' '.join(args)} -> {proc.returncode}\n"
                                 f"{proc.stdout}\n{proc.stderr}")  # fmt: skip
        return proc

    def up(self) -> None:
        out = self.knemu("up", "--nodes", str(self.nodes), "--name", self.name, "--subnet",
                         self.subnet, "--state-dir", str(self.state_root), "--proxy-mode",
                         self.proxy_mode, "--backend", self.backend, "--timeout", "90",
                         *(("--mtu", str(self.mtu)) if self.mtu != 1500 else ()),
                         *(("--tun-offload",) if self.tun_offload else ()),
                         timeout_s=150)  # fmt: skip
        assert f"export KNEMU_SERVER={self.server}" in out.stdout, out.stdout

    def down(self) -> subprocess.CompletedProcess[str]:
        return self.knemu("down", "--name", self.name, "--state-dir", str(self.state_root),
                          timeout_s=120, check=False)  # fmt: skip

    def down_and_check(self) -> None:
        """``knemu down``, then check it left no namespace, state directory or process."""
        self.down()
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert f"knemu-{self.name}-" not in left, "knemu down left namespaces behind"
        assert not (self.state_root / f"cluster-{self.name}").exists()
        assert not cluster_processes(self), "knemu down left processes behind"
        if self.kubeconfig.exists():
            assert f"knemu-{self.name}" not in self.kubeconfig.read_text(), "kubeconfig left"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.server + path, timeout=10) as resp:
            return json.loads(resp.read())

    def apply(self, manifest: str, namespace: str = "default") -> None:
        self.knemu("apply", "-n", namespace, "-f", "-", input_text=manifest)

    def apply_file(self, path: str) -> None:
        self.knemu("apply", "-f", str(REPO / path))

    def pods(self, namespace: str = "default", selector: str = "") -> list[dict[str, Any]]:
        query = f"?labelSelector={urllib.parse.quote(selector)}" if selector else ""
        items: list[dict[str, Any]] = self.get(f"/api/v1/namespaces/{namespace}/pods{query}")[
            "items"
        ]
        return items

    def wait_ready(self, count: int, namespace: str = "default", selector: str = "",
                   timeout_s: float = 60) -> list[dict[str, Any]]:  # fmt: skip
        ready: list[dict[str, Any]] = []

        def check() -> bool:
            nonlocal ready
            ready = [p for p in self.pods(namespace, selector) if _is_ready(p)]
            return len(ready) >= count

        wait_until(
            check, timeout_s, what=f"{count} ready pods {selector!r} in {namespace}", interval_s=0.2
        )
        return ready

    def service(self, name: str, namespace: str = "default") -> dict[str, Any]:
        obj: dict[str, Any] = self.get(f"/api/v1/namespaces/{namespace}/services/{name}")
        return obj

    def exec(self, pod: str, script: str, namespace: str = "default",
             timeout_s: float = 60) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return self.knemu("exec", "-n", namespace, pod, "--", "sh", "-c", script,
                          timeout_s=timeout_s, check=False)  # fmt: skip

    def table(self, node: str) -> dict[str, Any]:
        table: dict[str, Any] = self.get(f"/api/v1/nodes/{node}/proxy/table")
        return table

    def node_names(self) -> list[str]:
        return sorted(n["metadata"]["name"] for n in self.get("/api/v1/nodes")["items"])


def cluster_processes(c: LocalCluster) -> list[int]:
    """Pids whose environment carries this cluster's marker (set by `knemu up`)."""
    marker = f"KNEMU_LOCAL_CLUSTER={c.state_root / f'cluster-{c.name}'}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@contextlib.contextmanager
def local_cluster(
    state_root: Path, nodes: int = 3, proxy_mode: str = "iptables", backend: str = "vxlan",
    mtu: int = 1500, tun_offload: bool = False,
) -> Iterator[LocalCluster]:  # fmt: skip
    """A running ``knemu up`` cluster, downed and checked for leftovers however the block ends."""
    c = LocalCluster(state_root, nodes, proxy_mode, backend, mtu, tun_offload)
    try:
        c.up()
        yield c
    finally:
        c.down_and_check()


def _is_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status", {})
    conds = status.get("conditions", [])
    return bool(status.get("podIP")) and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in conds
    )


def tools_pod(name: str, node: str) -> str:
    """A throwaway client pod pinned to ``node`` (spec.nodeName, as a DaemonSet pod is)."""
    return f"""apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    role: tools
spec:
  nodeName: {node}
  containers:
  - name: tools
    image: tools
    command: ["sleep", "3600"]
"""


def read_until(
    proc: subprocess.Popen[bytes], stream: IO[bytes] | None, want: str, timeout_s: float = 30
) -> str:
    """What ``stream`` of ``proc`` says until it contains ``want`` (a regex), with a deadline:
    for CLI processes that stream (attach, port-forward) and must be read without blocking."""
    assert stream is not None
    seen = b""
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        while not re.search(want, seen.decode(errors="replace")):
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise AssertionError(f"no {want!r} within {timeout_s} s; got {seen!r}")
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                err = proc.stderr.read() if proc.stderr and stream is not proc.stderr else b""
                raise AssertionError(f"{proc.args!r} ended before {want!r}: {seen!r} {err!r}")
            seen += chunk
    return seen.decode()


# The echo line of the built-in nginx/echo workload: which pod answered and whom it saw.
FROM = re.compile(r"From=(\S+)\s+ClientIP=(\S+)")


def wait_backends(c: LocalCluster, key: str, count: int) -> None:
    """Until every node's router has ``count`` backends for service ``key``."""

    def ok() -> bool:
        for node in c.node_names():
            svcs = {s["key"]: s for s in c.table(node)["services"]}
            ports = svcs.get(key, {}).get("ports", [])
            if not ports or any(len(p["backends"]) != count for p in ports):
                return False
        return True

    wait_until(ok, 60, what=f"{count} backends of {key} on every node", interval_s=0.2)
