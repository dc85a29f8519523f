"""With BGP, pod IPs are reachable from outside the cluster without a Service or Ingress (seed
001): on a real 2-node `knemu up --backend bgp --bgp-peer <client>:64600` cluster, a client
namespace on the node switch reaches a pod directly, first by a static route, then by routes
learned from the nodes over eBGP (BIRD in the client, as a router outside the cluster peering
with Calico's nodes does).  The pod sees the client's own address: no NAT on the way.  All
traffic stays in namespaces the cluster and the test made."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from localcluster import FROM, LocalCluster

from knemu.testing import wait_until

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(shutil.which("bird") is None, reason="BIRD 2 not installed (bird2)"),
]
CLIENT_AS = 64600
WEB = """apiVersion: v1
kind: Pod
metadata: {name: web-2, labels: {app: web}}
spec:
  nodeName: node-2
  containers: [{name: web, image: "nginx:1.16"}]
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("knemu-bgp-ext"), nodes=2, backend="bgp")
    c.bgp_peer = f"{c.node_ip(70)}:{CLIENT_AS}"
    try:
        c.up()
        c.apply(WEB)
        c.wait_ready(1)
        yield c
    finally:
        c.down_and_check()


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)


def client_config(c: LocalCluster) -> str:
    me = c.node_ip(70)
    sessions = "\n".join(
        f"protocol bgp node{n} {{ local {me} as {CLIENT_AS}; neighbor {c.node_ip(n)} as 64512;"
        " direct; ipv4 { import all; export none; }; }"
        for n in (1, 2)
    )
    head = f"router id {me};\nprotocol device {{ }}\n"
    return head + "protocol kernel { ipv4 { import none; export all; }; }\n" + sessions + "\n"


@pytest.fixture
def client(cluster: LocalCluster, tmp_path: Path) -> Iterator[str]:
    ns, switch = f"knemu-{cluster.name}-ext", f"knemu-{cluster.name}-sw"
    try:
        assert _ip("netns", "add", ns).returncode == 0
        for cmd in (
            ["-n", switch, "link", "add", "ext0", "type", "veth", "peer", "name", "eth0",
             "netns", ns],
            ["-n", switch, "link", "set", "ext0", "master", "br0", "up"],
            ["-n", ns, "link", "set", "lo", "up"],
            ["-n", ns, "addr", "add", f"{cluster.node_ip(70)}/24", "dev", "eth0"],
            ["-n", ns, "link", "set", "eth0", "up"],
        ):  # fmt: skip
            out = _ip(*cmd)
            assert out.returncode == 0, f"ip {' '.join(cmd)}: {out.stderr}"
        yield ns
    finally:
        _ip("-n", switch, "link", "del", "ext0")
        _ip("netns", "del", ns)


def curl_from(ns: str, url: str) -> str:
    argv = ["ip", "netns", "exec", ns, "curl", "-s", "-m", "3", url]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30).stdout


def test_an_outside_client_reaches_a_pod_ip_by_static_route_then_by_bgp(
    cluster: LocalCluster, client: str, tmp_path: Path
) -> None:
    web = cluster.get("/api/v1/namespaces/default/pods/web-2")["status"]["podIP"]
    me = cluster.node_ip(70)
    assert FROM.search(curl_from(client, f"http://{web}/")) is None  # no route yet
    # A static route to node-2's podCIDR, as an upstream router could be configured by hand.
    assert (
        _ip("-n", client, "route", "add", "10.244.2.0/24", "via", cluster.node_ip(2)).returncode
        == 0
    )
    match = FROM.search(curl_from(client, f"http://{web}/"))
    assert match is not None and match.group(2) == me  # the pod sees the client itself
    assert _ip("-n", client, "route", "del", "10.244.2.0/24").returncode == 0
    # Now over BGP: the client's BIRD peers with both nodes and learns every podCIDR.
    conf, ctl = tmp_path / "client.conf", tmp_path / "client.ctl"
    conf.write_text(client_config(cluster))
    argv = ["ip", "netns", "exec", client, "bird", "-f", "-c", str(conf), "-s", str(ctl)]
    bird = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:

        def learned() -> str:
            return _ip("-n", client, "route", "show", "proto", "bird").stdout

        wait_until(lambda: "10.244.1.0/24" in learned() and "10.244.2.0/24" in learned(), 60,
                   what="the client learns both podCIDRs over BGP", interval_s=0.5)  # fmt: skip
        match = FROM.search(curl_from(client, f"http://{web}/"))
        assert match is not None and match.group(2) == me, learned()

        def global_session_up() -> bool:
            sessions = cluster.table("node-1")["bgp"]["sessions"]
            return any(
                s["peer"].startswith("Global_") and s["info"].startswith("Established")
                for s in sessions
            )

        wait_until(global_session_up, 30, what="node-1's session with the client Established")
    finally:
        bird.kill()
        bird.wait(10)
