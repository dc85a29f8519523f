"""`knemu flows` / `knemu trace` against a fake REST client (no cluster needed)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from knemu.cli.commands import observe

HOP_1 = {"time": 10.0, "node": "node-1", "point": "from-pod", "verdict": "TRANSLATED",
         "summary": "TCP 10.244.1.5:40000 -> 10.96.0.20:8080", "nat": "dnat",
         "translated": {"src_ip": "10.244.1.5", "src_port": 40000, "dst_ip": "10.244.2.6",
                        "dst_port": 80}, "service": "default/web:http"}  # fmt: skip
HOP_2 = {"time": 10.002, "node": "node-2", "point": "to-pod", "verdict": "FORWARDED",
         "summary": "TCP 10.244.1.5:40000 -> 10.244.2.6:80",
         "outer": {"src_ip": "192.168.59.11", "dst_ip": "192.168.59.12", "dst_port": 4789,
                   "vni": 1}}  # fmt: skip


class FakeClient:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def request(self, method: str, path: str, query: Any = None, body: Any = None) -> Any:
        self.calls.append((method, path, body))
        if path == "/api/v1/nodes":
            return {"items": [{"metadata": {"name": n}} for n in ("node-2", "node-1")]}
        if path.endswith("/proxy/flows/record"):
            return {"recording_s": float(query["seconds"])}
        if path.endswith("/proxy/trace"):
            probe = {"protocol": "TCP", "src_ip": "10.244.1.5", "src_port": 40000,
                     "dst_ip": "10.96.0.20", "dst_port": 8080, "pod": "default/c"}  # fmt: skip
            return {"node": "node-1", "time": 10.0, "hops": [HOP_1], "probe": probe}
        raise AssertionError(path)

    def get(self, rt: Any, namespace: str, name: str) -> Any:
        if rt.kind == "Pod":
            return {"spec": {"nodeName": "node-1"}, "status": {"podIP": "10.244.1.5"}}
        return {"spec": {"clusterIP": "10.96.0.20"}}

    def stream(self, path: str, query: Mapping[str, str]) -> Iterator[bytes]:
        self.calls.append(("STREAM", path, dict(query)))
        if path.startswith("/api/v1/nodes/node-2/"):
            yield json.dumps(HOP_2).encode() + b"\n"


def test_format_flow_shows_nat_service_and_outer_header() -> None:
    line = observe.format_flow(HOP_1)
    assert "=> 10.244.2.6:80" in line and "[dnat]" in line and "default/web:http" in line
    assert "outer 192.168.59.11 -> 192.168.59.12:4789 vni 1" in observe.format_flow(HOP_2)


def test_trace_merges_the_other_nodes_hops_in_time_order(
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = FakeClient()
    args = argparse.Namespace(client=client, source="c", destination="web", port=8080,
                              protocol=None, namespace="default", wait_ms=100,
                              output="text")  # fmt: skip
    assert observe.trace_run(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert "-> 10.96.0.20:8080 from node-1" in out[0]
    assert "node-1" in out[1] and "node-2" in out[2]
    posts = [c[1] for c in client.calls if c[0] == "POST"]
    # Every other node is armed to record forwarded packets before the probe is sent.
    assert posts == ["/api/v1/nodes/node-2/proxy/flows/record", "/api/v1/nodes/node-1/proxy/trace"]
    post = next(c for c in client.calls if c[1].endswith("/proxy/trace"))
    assert post[2]["protocol"] == "TCP" and post[2]["dst"] == "10.96.0.20"
    stream = next(c for c in client.calls if c[0] == "STREAM")
    assert stream[2]["ip"] == "10.244.1.5" and stream[2]["port"] == "40000"


def test_flows_without_follow_prints_every_node_sorted(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(client=FakeClient(), node=None, follow=False, ip=None, port=None,
                              limit=10, output="json")  # fmt: skip
    assert observe.flows_run(args) == 0
    assert json.loads(capsys.readouterr().out)["node"] == "node-2"


def test_an_ip_in_ip_outer_header_is_shown_without_port_or_vni() -> None:
    hop = dict(HOP_2, outer={"src_ip": "192.168.59.11", "dst_ip": "192.168.59.12",
                             "dst_port": 0, "vni": 0, "encapsulation": "ipip"})  # fmt: skip
    line = observe.format_flow(hop)
    assert "outer 192.168.59.11 -> 192.168.59.12 ipip" in line and "vni" not in line
