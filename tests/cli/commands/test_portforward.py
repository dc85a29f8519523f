"""Port-forward without I/O: the kubelet's websocket framing and the CLI's port/pod choices."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, strategies as st

from knemu.cli.commands.portforward import (
    PortSpec,
    parse_addresses,
    parse_port_spec,
    pick_pod,
    pod_port,
    service_target,
)
from knemu.errors import LocalError
from knemu.portforward_frames import (
    ClientDecoder,
    Received,
    close_frame,
    data_channel,
    error_channel,
    frame,
    parse_client_message,
    parse_ports,
    port_prefix,
)


def test_channels_and_prefix_follow_the_kubelet() -> None:
    # websocket.go: DATA 2i, ERROR 2i+1, the port as uint16 little-endian first on each.
    assert [data_channel(i) for i in range(3)] == [0, 2, 4]
    assert [error_channel(i) for i in range(3)] == [1, 3, 5]
    assert port_prefix(8080) == b"\x90\x1f"
    assert frame(2, b"hi") == b"\x02hi"
    assert close_frame(1) == b"\xff\x02"


def test_parse_ports_takes_repeats_and_comma_lists() -> None:
    assert parse_ports(["80", "443,8080"]) == [80, 443, 8080]
    for bad in (["0"], ["65536"], ["x"], ["80,"], []):
        with pytest.raises(LocalError, match="port"):
            parse_ports(bad)


def test_decoder_strips_prefixes_and_splits_data_from_errors() -> None:
    d = ClientDecoder([80, 443])
    assert d.feed(b"\x00" + port_prefix(80)) is None
    assert d.feed(b"\x01" + port_prefix(80)) is None
    assert d.feed(b"\x02\xbb") is None  # the prefix may come in pieces
    assert d.feed(b"\x02\x01hello") == Received(1, data=b"hello")
    assert d.feed(b"\x00abc") == Received(0, data=b"abc")
    assert d.feed(b"\x01refused") == Received(0, error="refused")
    assert d.feed(b"") is None


def test_decoder_refuses_a_wrong_port_or_channel() -> None:
    with pytest.raises(LocalError, match="announced port 81, expected 80"):
        ClientDecoder([80]).feed(b"\x00" + port_prefix(81))
    with pytest.raises(LocalError, match="channel 2"):
        ClientDecoder([80]).feed(b"\x02" + port_prefix(80))


@given(st.integers(1, 65535), st.binary(max_size=64), st.integers(0, 3))
def test_decoder_gives_the_payload_whatever_the_split(port: int, data: bytes, cut: int) -> None:
    wire = port_prefix(port) + data
    d = ClientDecoder([port])
    got = [d.feed(b"\x00" + part) for part in (wire[:cut], wire[cut:])]
    assert b"".join(r.data for r in got if r is not None) == data


def test_server_reads_data_and_close_and_ignores_the_rest() -> None:
    assert parse_client_message(b"\x02abc", 2) == ("data", 1, b"abc")
    assert parse_client_message(b"\xff\x00", 2) == ("close", 0, b"")
    assert parse_client_message(b"\x01x", 2) is None  # an error channel: the server's
    assert parse_client_message(b"\x04x", 2) is None  # no third port
    assert parse_client_message(b"", 2) is None


def test_port_specs_like_kubectl() -> None:
    assert parse_port_spec("8080") == PortSpec(8080, "8080")
    assert parse_port_spec("18080:80") == PortSpec(18080, "80")
    assert parse_port_spec(":80") == PortSpec(0, "80")
    assert parse_port_spec("9000:http") == PortSpec(9000, "http")
    for bad in ("70000:80", "8080:", "a:80", "1:0"):
        with pytest.raises(LocalError):
            parse_port_spec(bad)


def test_addresses_default_to_what_was_asked_only() -> None:
    assert parse_addresses("localhost") == ["127.0.0.1"]
    assert parse_addresses("127.0.0.1,::1,127.0.0.1") == ["127.0.0.1", "::1"]
    with pytest.raises(LocalError, match="not an IP address"):
        parse_addresses("example.com")


def _pod(name: str, phase: str = "Running", ready: bool = True, **extra: Any) -> dict[str, Any]:
    status = "True" if ready else "False"
    ports = [{"name": "http", "containerPort": 8080}]
    return {
        "metadata": {"name": name, **extra},
        "spec": {"containers": [{"name": "main", "ports": ports}]},
        "status": {"phase": phase, "conditions": [{"type": "Ready", "status": status}]},
    }


def test_pick_pod_takes_the_first_ready_one() -> None:
    pods = [_pod("c"), _pod("a", ready=False), _pod("b"), _pod("0", deletionTimestamp="x")]
    assert pick_pod(pods, "service web", "app=web")["metadata"]["name"] == "b"
    with pytest.raises(LocalError, match=r"selects no ready pod \(selector app=web, 1 pod"):
        pick_pod([_pod("a", phase="Pending", ready=False)], "service web", "app=web")


def test_service_port_maps_to_the_target_port() -> None:
    svc = {"metadata": {"name": "web"}, "spec": {"ports": [
        {"name": "web", "port": 80, "targetPort": 8080},
        {"name": "alt", "port": 81, "targetPort": "http"},
        {"port": 82},
    ]}}  # fmt: skip
    pod = _pod("p")
    assert service_target(svc, pod, "80") == 8080
    assert service_target(svc, pod, "web") == 8080
    assert service_target(svc, pod, "81") == 8080  # named targetPort: the container's port
    assert service_target(svc, pod, "82") == 82
    with pytest.raises(LocalError, match="does not have a service port 83"):
        service_target(svc, pod, "83")
    assert pod_port(pod, "http") == 8080 and pod_port(pod, "9") == 9
    with pytest.raises(LocalError, match="no container port named 'dns'"):
        pod_port(pod, "dns")
