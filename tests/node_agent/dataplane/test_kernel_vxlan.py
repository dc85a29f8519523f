"""Interoperability with the Linux kernel's own VXLAN device (an independent implementation).

Two network namespaces made for the test are joined by a veth pair (underlay 10.250.0.1 and
.2).  In one, a kernel ``vxlan`` device plays node-2 the way flannel configures it (static FDB
and neighbour entries, route to node-1's podCIDR); in the other our Router plays node-1 behind a
UDP socket.  A ping from our "pod" must be decapsulated and answered by the kernel, and the
kernel's encapsulated reply must be decapsulated by us.  (The kernel will not encapsulate to
one of its own addresses, hence two namespaces.)  All traffic stays inside them.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[3] / "src")

SCRIPT = r"""
import socket, sys, time
from knemu.node_agent.dataplane.router import OUT_POD, OUT_UNDERLAY, LocalNode, Router
from knemu.proto import wire

kernel_mac = sys.argv[1]
node = LocalNode("node-1", "10.250.0.1", "02:00:00:00:00:01", "10.244.1.0/24", "10.244.1.1")
r = Router(node)
r.set_peer("node-2", "10.244.2.0/24", "10.250.0.2", kernel_mac, vxlan_port=4789)
r.add_local_pod("10.244.1.5", "a")
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("10.250.0.1", 4790))
sock.settimeout(0.5)
echo = wire.encode_icmp(wire.IcmpMessage(8, 0, b"\x12\x34\x00\x01", b"knemu-interop"))
ping = wire.ip_packet("10.244.1.5", "10.244.2.1", 1, echo)
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    kind, addr, payload = r.handle_pod("a", ping, time.monotonic())
    assert kind == OUT_UNDERLAY and addr == ("10.250.0.2", 4789), (kind, addr)
    sock.sendto(bytes(payload), addr)
    try:
        data, src = sock.recvfrom(65535)
    except socket.timeout:
        continue  # the first ping may race the device coming up
    out = r.handle_underlay(data, src, time.monotonic())
    assert out is not None and out[:2] == (OUT_POD, "a"), (out, r.statistics())
    ip = wire.decode_ipv4(bytes(out[2]))
    icmp = wire.decode_icmp(ip.payload)
    assert (ip.src, ip.dst, icmp.type, icmp.payload) == ("10.244.2.1", "10.244.1.5", 0,
                                                        b"knemu-interop"), (ip, icmp)
    print("interop ok", r.statistics())
    sys.exit(0)
sys.exit("no reply from the kernel vxlan device within 10 s")
"""


def _ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def kernel_peer() -> Iterator[tuple[str, str, str]]:
    """(our namespace, the kernel peer's namespace, its VTEP MAC)."""
    tag = secrets.token_hex(3)
    ours, theirs, mac = f"kt{tag}a", f"kt{tag}b", "02:00:00:00:00:02"
    try:
        for ns in (ours, theirs):
            subprocess.run(["ip", "netns", "add", ns], check=True, timeout=10)
            _ip(ns, "link", "set", "lo", "up")
        _ip(
            ours,
            "link",
            "add",
            f"kt{tag}u",
            "type",
            "veth",
            "peer",
            "name",
            f"kt{tag}v",
            "netns",
            theirs,
        )
        _ip(ours, "addr", "add", "10.250.0.1/30", "dev", f"kt{tag}u")
        _ip(ours, "link", "set", f"kt{tag}u", "up")
        _ip(theirs, "addr", "add", "10.250.0.2/30", "dev", f"kt{tag}v")
        _ip(theirs, "link", "set", f"kt{tag}v", "up")
        _ip(
            theirs,
            "link",
            "add",
            "vx0",
            "address",
            mac,
            "type",
            "vxlan",
            "id",
            "1",
            "dstport",
            "4789",
            "local",
            "10.250.0.2",
            "nolearning",
        )
        _ip(theirs, "addr", "add", "10.244.2.1/24", "dev", "vx0")
        _ip(theirs, "link", "set", "vx0", "up")
        # flannel style: route via node-1's .0 on-link, its VTEP MAC, and where that MAC lives
        _ip(theirs, "route", "add", "10.244.1.0/24", "via", "10.244.1.0", "dev", "vx0", "onlink")
        _ip(
            theirs,
            "neigh",
            "add",
            "10.244.1.0",
            "lladdr",
            "02:00:00:00:00:01",
            "dev",
            "vx0",
            "nud",
            "permanent",
        )
        subprocess.run(
            [
                "bridge",
                "-n",
                theirs,
                "fdb",
                "append",
                "02:00:00:00:00:01",
                "dev",
                "vx0",
                "dst",
                "10.250.0.1",
                "port",
                "4790",
            ],
            check=True,
            timeout=10,
        )
        yield ours, theirs, mac
    finally:
        for ns in (ours, theirs):  # deleting a namespace deletes its links
            subprocess.run(["ip", "netns", "del", ns], check=False, timeout=10, capture_output=True)


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
def test_ping_through_a_kernel_vxlan_peer(kernel_peer: tuple[str, str, str]) -> None:
    ns, _, mac = kernel_peer
    env = {**os.environ, "PYTHONPATH": SRC}
    done = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", SCRIPT, mac],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "interop ok" in done.stdout
