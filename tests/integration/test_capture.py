"""`knemu capture` on a real 2-node local cluster, decoded by tshark.

A client pod on node-1 requests a web pod on node-2 over and over while a capture runs; the
capture stops by itself after --count packets.  The node capture must decode as VXLAN (VNI 1,
outer node IPs, port 4789) carrying the client's TCP flow; the pod capture, streamed through
`-w - | tshark -r -`, must hold the client's own packets to port 80.  All traffic stays inside
the cluster's namespaces; the fixture runs `knemu down` and checks nothing is left.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from localcluster_helpers import LocalCluster, local_cluster, tools_pod

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(shutil.which("tshark") is None,
                       reason="Debian's tshark is not installed (scripts/test installs it)"),
]  # fmt: skip

WEB = """apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
spec:
  nodeName: node-2
  containers:
  - name: web
    image: nginx
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("knemu-state"), nodes=2) as c:
        c.apply(tools_pod("client", "node-1"))
        c.apply(WEB)
        c.wait_ready(1, selector="role=tools")
        c.wait_ready(1, selector="app=web")
        yield c


def pod_ip(c: LocalCluster, name: str) -> str:
    return str(c.get(f"/api/v1/namespaces/default/pods/{name}")["status"]["podIP"])


def knemu_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "knemu.cli", *args]


def with_traffic(c: LocalCluster, capture: subprocess.Popen[bytes], url: str) -> None:
    """Requests from the client pod until the capture has ended (it stops at --count)."""
    traffic = subprocess.Popen(
        knemu_argv("exec", "client", "--", "sh", "-c",
                   f"for i in $(seq 100); do curl -s -m 2 -o /dev/null {url}; sleep 0.1; done"),
        env=c.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        capture.wait(timeout=60)
    finally:
        traffic.kill()
        traffic.wait()


def tshark_rows(source: str, fields: list[str], stdin: bytes | None = None) -> list[list[str]]:
    out = subprocess.run(
        ["tshark", "-r", source, "-T", "fields", *[a for f in fields for a in ("-e", f)]],
        input=stdin, capture_output=True, check=True, timeout=60,
    ).stdout.decode()  # fmt: skip
    return [line.split("\t") for line in out.splitlines()]


def test_node_underlay_capture_decodes_as_vxlan(cluster: LocalCluster, tmp_path: Path) -> None:
    client, web = pod_ip(cluster, "client"), pod_ip(cluster, "web")
    path = tmp_path / "node-1.pcapng"
    capture = subprocess.Popen(
        knemu_argv("capture", "node/node-1", "-w", str(path), "--count", "8",
                   "--filter", f"host {web} and port 80"),
        env=cluster.env(), stderr=subprocess.PIPE,
    )  # fmt: skip
    with_traffic(cluster, capture, f"http://{web}/")
    assert capture.returncode == 0, capture.stderr.read() if capture.stderr else ""
    fields = ["vxlan.vni", "ip.src", "ip.dst", "udp.dstport", "tcp.srcport", "tcp.dstport"]
    rows = tshark_rows(str(path), fields)
    assert len(rows) == 8
    node_1, node_2 = cluster.node_ip(1), cluster.node_ip(2)
    flows = set()
    for vni, src, dst, udp_port, sport, dport in rows:
        assert vni == "1" and udp_port == "4789"
        (outer_src, inner_src), (outer_dst, inner_dst) = src.split(","), dst.split(",")
        assert {outer_src, outer_dst} == {node_1, node_2}
        flows.add((inner_src, inner_dst, dport if inner_dst == web else sport))
        assert (outer_src == node_1) == (inner_src == client)
    assert flows == {(client, web, "80"), (web, client, "80")}


def test_pod_capture_streams_into_tshark(cluster: LocalCluster) -> None:
    client, web = pod_ip(cluster, "client"), pod_ip(cluster, "web")
    pipeline = (
        f"{sys.executable} -m knemu.cli capture pod/client -w - --count 6 --filter 'tcp' "
        "| tshark -r - -T fields -e ip.src -e ip.dst -e tcp.dstport -e tcp.srcport"
    )
    capture = subprocess.Popen(
        ["sh", "-c", pipeline], env=cluster.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    with_traffic(cluster, capture, f"http://{web}/")
    out = (capture.stdout.read() if capture.stdout else b"").decode()
    rows = [line.split("\t") for line in out.splitlines()]
    assert len(rows) == 6, out
    for src, dst, dport, sport in rows:
        assert (src, dst, dport) == (client, web, "80") or (src, dst, sport) == (web, client, "80")


def test_a_bad_filter_is_refused_with_the_reason(cluster: LocalCluster) -> None:
    out = cluster.knemu("capture", "node/node-2", "--filter", "tcp or udp", "-w", "-",
                        check=False)  # fmt: skip
    assert out.returncode != 0
    assert "expected 'and' before 'or'" in out.stderr
