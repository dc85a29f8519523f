"""`knemu capture` on a real 2-node local cluster, decoded by tshark.

A client pod on node-1 requests a web pod on node-2 over and over while a capture runs; the
capture stops by itself after --count packets.  The node capture must decode as VXLAN (VNI 1,
outer node IPs, port 4789) carrying the client's TCP flow; the pod capture, streamed through
`-w - | tshark -r -`, must hold the client's own packets to port 80.  All traffic stays inside
the cluster's namespaces; the fixture runs `knemu down` and checks nothing is left.
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from localcluster import LocalCluster, local_cluster, tools_pod

from knemu.node_agent.dataplane.capture import CaptureReader

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
        c.apply(tools_pod("sink", "node-2"))
        c.apply(WEB)
        c.wait_ready(2, selector="role=tools")
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


def iperf_mbit(c: LocalCluster, server_ip: str) -> float:
    """One 3 s iperf3 run from client to sink (an iperf3 -s -1 server started for it)."""
    server = subprocess.Popen(knemu_argv("exec", "sink", "--", "iperf3", "-s", "-1"),
                              env=c.env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        report: dict[str, Any] = {"error": "not run"}
        for _ in range(20):  # the server may not listen yet
            out = c.knemu("exec", "client", "--", "iperf3", "-c", server_ip, "-t", "3", "-J",
                          timeout_s=60, check=False)  # fmt: skip
            try:
                report = json.loads(out.stdout)
            except ValueError:
                report = {"error": out.stdout + out.stderr}
            if "error" not in report:
                break
            time.sleep(0.5)
        assert "error" not in report, report
        return float(report["end"]["sum_received"]["bits_per_second"]) / 1e6
    finally:
        server.kill()
        server.wait()


def test_a_reader_that_stalls_loses_packets_not_throughput(cluster: LocalCluster) -> None:
    """A capture whose reader reads nothing while iperf3 runs: iperf3 gets through about as
    fast as without it, and the capture's closing statistics count the packets it lost."""
    sink = pod_ip(cluster, "sink")
    baseline = iperf_mbit(cluster, sink)
    conn = http.client.HTTPConnection(cluster.host_ip, 6443, timeout=60)
    conn.request("GET", "/api/v1/nodes/node-1/proxy/capture?duration=12&filter=tcp")
    try:
        mbit = iperf_mbit(cluster, sink)
        resp = conn.getresponse()  # only now does the reader start reading
        reader = CaptureReader(keep_packets=False)
        while chunk := resp.read1(65536):
            reader.feed(chunk)
    finally:
        conn.close()
    summary = reader.summary
    print(f"iperf3 {baseline:.0f} Mbit/s alone, {mbit:.0f} Mbit/s under a stalled capture, "
          f"which kept {summary.packets} packets and dropped {summary.dropped}")  # fmt: skip
    assert mbit > 0.3 * baseline, "forwarding was held up by the capture"
    assert summary.packets > 0 and summary.dropped is not None and summary.dropped > 0
