"""What the underlay-authentication cluster tests share: an attacker namespace on a local
cluster's node switch, a UDP listener in a pod that reports what it receives, and the
datagrams the attacker sends.  All traffic stays in namespaces the cluster and the test made."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from localcluster import REPO, LocalCluster, read_until

SEND = Path(__file__).with_name("underlay_send.py")
LISTEN_PORT = 9999
# In the pod: print every datagram on LISTEN_PORT until one says b"legit" (or 90 s pass).
LISTENER = (
    "import socket\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    f"s.bind(('0.0.0.0', {LISTEN_PORT}))\n"
    "s.settimeout(90)\n"
    "print('listening', flush=True)\n"
    "while True:\n"
    "    data = s.recv(2048)\n"
    "    print('got', data.decode(errors='replace'), flush=True)\n"
    "    if data == b'legit':\n"
    "        break\n"
)


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)


@contextmanager
def attacker(cluster: LocalCluster) -> Iterator[tuple[str, str]]:
    """A namespace plugged into the cluster's node switch with an address that is no node's:
    (namespace, its address)."""
    ns, ip = f"knemu-{cluster.name}-evil", cluster.node_ip(60)
    switch = f"knemu-{cluster.name}-sw"
    try:
        assert _ip("netns", "add", ns).returncode == 0
        for cmd in (
            ["-n", switch, "link", "add", "ev0", "type", "veth", "peer", "name", "eth0",
             "netns", ns],
            ["-n", switch, "link", "set", "ev0", "master", "br0", "up"],
            ["-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0"],
            ["-n", ns, "link", "set", "eth0", "up"],
        ):  # fmt: skip
            out = _ip(*cmd)
            assert out.returncode == 0, f"ip {' '.join(cmd)}: {out.stderr}"
        yield ns, ip
    finally:
        _ip("-n", switch, "link", "del", "ev0")
        _ip("netns", "del", ns)


def send(ns: str, src: str, dst: str, dport: int, *payloads: bytes) -> None:
    """UDP datagrams from ``ns`` with source address ``src`` (any, spoofed or not)."""
    out = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, str(SEND), src, dst, str(dport),
         *(p.hex() for p in payloads)],
        capture_output=True, text=True, check=False, timeout=30,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr


@contextmanager
def listener(cluster: LocalCluster, pod: str) -> Iterator[subprocess.Popen[bytes]]:
    """``LISTENER`` running in ``pod`` through `knemu exec`, once it says it listens."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "knemu.cli", "exec", pod, "--", "python3", "-u", "-c", LISTENER],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cluster.env(),
    )  # fmt: skip
    try:
        read_until(proc, proc.stdout, "listening", 60)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def close_listener(cluster: LocalCluster, proc: subprocess.Popen[bytes], sender: str,
                   pod_ip: str) -> str:  # fmt: skip
    """Send b"legit" from pod ``sender`` (a real pod on another node, through the overlay)
    until the listener has it; everything the listener printed."""
    script = (
        "import socket, time\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "for _ in range(40):\n"
        f"    s.sendto(b'legit', ('{pod_ip}', {LISTEN_PORT}))\n"
        "    time.sleep(0.25)\n"
    )
    sending = subprocess.Popen(
        [sys.executable, "-m", "knemu.cli", "exec", sender, "--", "python3", "-c", script],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cluster.env(),
    )  # fmt: skip
    try:
        return read_until(proc, proc.stdout, "got legit", 30)
    finally:
        sending.kill()
        sending.wait(10)


def counters(cluster: LocalCluster, node: str) -> dict[str, int]:
    counts: dict[str, int] = cluster.table(node)["counters"]
    return counts


def node_annotations(cluster: LocalCluster, node: str) -> dict[str, str]:
    annotations: dict[str, str] = cluster.get(f"/api/v1/nodes/{node}")["metadata"]["annotations"]
    return annotations


def vtep_mac(cluster: LocalCluster, node: str) -> str:
    data = json.loads(node_annotations(cluster, node)["flannel.alpha.coreos.com/backend-data"])
    return str(data["VtepMAC"])
