"""`knemu capture` against a fake REST client (no cluster needed; on a local cluster:
test_capture_cluster.py)."""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

import pytest

from knemu.cli.commands import capture
from knemu.errors import LocalError
from knemu.node_agent.dataplane.capture import CaptureSession
from knemu.proto import wire


def packet(sport: int) -> bytes:
    seg = wire.TcpSegment(sport, 80, seq=1, ack=0, flags=wire.TCP_SYN, payload=b"")
    return wire.tcp_packet("10.244.1.5", "10.244.2.7", seg)


class FakeClient:
    server = "http://192.0.2.10:6443"

    def __init__(self, pod: dict[str, Any] | None = None, stream: bytes = b"") -> None:
        self.pod = pod or {}
        self.body = stream
        self.opened: list[tuple[str, dict[str, str]]] = []

    def get(self, rt: Any, namespace: str, name: str) -> dict[str, Any]:
        assert rt.kind == "Pod" and namespace == "web"
        return self.pod

    def request(self, method: str, path: str) -> dict[str, Any]:
        assert (method, path) == ("GET", "/version")
        return {"gitVersion": "v1.30.0"}

    def _open(self, method: str, path: str, query: dict[str, str], streaming: bool) -> io.BytesIO:
        self.opened.append((path, dict(query)))
        return io.BytesIO(self.body)


RUNNING = {"spec": {"nodeName": "node-2"}, "status": {"podIP": "10.244.2.7"}}


def test_targets_become_the_node_proxy_path() -> None:
    client: Any = FakeClient(RUNNING)
    assert capture.capture_path(client, "node/node-1", "web") == (
        "/api/v1/nodes/node-1/proxy/capture",
        {},
    )
    assert capture.capture_path(client, "pod/api", "web") == (
        "/api/v1/nodes/node-2/proxy/capture",
        {"pod": "web/api"},
    )


@pytest.mark.parametrize(
    ("target", "pod", "message"),
    [
        ("svc/web", RUNNING, "write node/NAME or pod/NAME"),
        ("node/", RUNNING, "write node/NAME or pod/NAME"),
        ("pod/api", {"spec": {}, "status": {}}, "not running yet"),
        ("pod/api", {"spec": {"nodeName": "node-2", "hostNetwork": True},
                     "status": {"podIP": "192.168.59.12"}}, "capture node/node-2 instead"),
    ],
)  # fmt: skip
def test_bad_targets_say_what_to_do(target: str, pod: dict[str, Any], message: str) -> None:
    with pytest.raises(LocalError, match=message):
        capture.capture_path(FakeClient(pod), target, "web")  # type: ignore[arg-type]


def capture_stream(dropped: int) -> bytes:
    session = CaptureSession("pcapng", buffer_bytes=200)
    for i in range(2 + dropped):
        session.offer(packet(40000 + i), 1.0 + i, True)
    assert session.statistics().dropped == dropped
    return session.header() + session.take() + session.trailer(9.0)


def args_for(client: Any, **kw: Any) -> argparse.Namespace:
    base = {"target": "pod/api", "namespace": "web", "write": None, "filter": "",
            "count": None, "duration": None, "format": "pcapng", "client": client}  # fmt: skip
    return argparse.Namespace(**{**base, **kw})


def test_write_copies_the_stream_and_reports_drops(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = capture_stream(dropped=3)
    client = FakeClient(RUNNING, data)
    out = tmp_path / "api.pcapng"
    args = args_for(client, write=str(out), filter="tcp", count=5, duration=2.5)
    assert capture.run(args) == 0
    assert out.read_bytes() == data
    query = {"pod": "web/api", "format": "pcapng", "filter": "tcp", "count": "5",
             "duration": "2.5"}  # fmt: skip
    assert client.opened == [("/api/v1/nodes/node-2/proxy/capture", query)]
    assert capsys.readouterr().err.strip() == "2 packets captured, 3 dropped (reader too slow)"


def test_without_write_each_packet_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert capture.run(args_for(FakeClient(RUNNING, capture_stream(dropped=0)))) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("Out TCP 10.244.1.5:40000 > 10.244.2.7:80, length 40")
