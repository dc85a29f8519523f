"""The taps ``/capture`` installs on a node's adapters (``kubelet.capture.CaptureTaps``), with
fake adapters: installed while a capture runs, removed after, and cheap when the reader lags;
then ``GET /capture`` and ``POST /lifecycle`` through the KubeletApi that is handed them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from knemu.node_agent.dataplane.capture import (
    CaptureReader,
    CaptureSession,
    CaptureStatistics,
    raw_ipv4,
)
from knemu.node_agent.kubelet.capture import CaptureTaps
from knemu.proto import wire
from knemu.testing import wait_for

from .._packets import NODE_1, NODE_2, POD_A, tcp, vxlan
from .kubelet_helpers import make_kubelet_api


class FakeAdapter:
    tap = None
    ip_protocol: int | None = 0  # an open UDP underlay (pods' ports ignore it)


def test_taps_are_installed_while_captures_run_and_removed_after() -> None:
    pod, underlay = FakeAdapter(), FakeAdapter()
    taps = CaptureTaps(lambda: underlay, {"default/a": pod})
    one, two = CaptureSession("pcap"), CaptureSession("pcap", packet_filter="udp")
    detach_one = taps.attach_pod("default/a", one)
    detach_two = taps.attach_pod("default/a", two)
    assert pod.tap is not None and taps.running == 2
    pod.tap(tcp(), 1.0, True)
    assert (one.statistics().captured, two.statistics().filtered) == (1, 1)
    detach_one()
    detach_one()  # idempotent
    assert pod.tap is not None
    detach_two()
    assert pod.tap is None and taps.running == 0
    under = CaptureSession("pcap")
    detach = taps.attach_underlay(under)
    assert underlay.tap is not None
    underlay.tap(b"\x08" + bytes(7), NODE_1, NODE_2, 2.0, False)
    reader = CaptureReader()
    reader.feed(under.header() + under.take())
    assert wire.decode_ipv4(reader.packets[0][1]).dst == NODE_2[0]
    detach()
    assert underlay.tap is None


def test_capturing_a_pod_that_is_not_here_is_not_found() -> None:
    taps = CaptureTaps(lambda: None, {})
    with pytest.raises(Exception, match="pod default/x has no eth0 on this node"):
        taps.attach_pod("default/x", CaptureSession())
    with pytest.raises(Exception, match="underlay socket is not open"):
        taps.attach_underlay(CaptureSession())


def test_a_full_queue_skips_the_filter_and_the_underlay_skips_building() -> None:
    session = CaptureSession("pcap", buffer_bytes=150, packet_filter="udp")
    session.offer(vxlan(tcp()), 1.0)
    assert session.statistics().captured == 1
    assert not session.room_for(200)
    underlay = FakeAdapter()
    taps = CaptureTaps(lambda: underlay, {})
    taps.attach_underlay(session)
    assert underlay.tap is not None
    underlay.tap(b"\x08" + bytes(150), NODE_1, NODE_2, 2.0, True)
    session.offer(tcp(), 3.0)  # would be filtered out, but there is no room anyway
    assert session.statistics() == CaptureStatistics(captured=1, dropped=2, filtered=0)


def test_an_ipip_underlay_is_captured_with_protocol_4_outer_headers() -> None:
    underlay = FakeAdapter()
    underlay.ip_protocol = 4  # raw socket: reads whole IPv4 packets, sends the inner one
    taps = CaptureTaps(lambda: underlay, {})
    session = CaptureSession("pcap")
    taps.attach_underlay(session)
    assert underlay.tap is not None
    inner = tcp()
    underlay.tap(inner, NODE_1, NODE_2, 1.0, True)  # sent: the kernel adds the outer header
    underlay.tap(raw_ipv4(inner, NODE_2[0], NODE_1[0], 4), NODE_2, NODE_1, 2.0, False)
    reader = CaptureReader()
    reader.feed(session.header() + session.take())
    sent, received = (wire.decode_ipv4(p[1]) for p in reader.packets)
    assert (sent.src, sent.dst, sent.proto) == (NODE_1[0], NODE_2[0], 4)
    assert (received.src, received.dst, received.proto) == (NODE_2[0], NODE_1[0], 4)
    assert bytes(sent.payload) == inner == bytes(received.payload)
    assert wire.ipv4_header_checksum(reader.packets[0][1]) == 0


def test_an_underlay_that_never_opened_names_the_bgp_backend() -> None:
    underlay = FakeAdapter()
    underlay.ip_protocol = None
    with pytest.raises(Exception, match="network backend is bgp"):
        CaptureTaps(lambda: underlay, {}).attach_underlay(CaptureSession())


# -- through the HTTP API ----------------------------------------------------------------------


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, FakeAdapter]]:
    """(base URL, pod default/a's eth0) of a KubeletApi whose underlay is not open yet."""
    port = FakeAdapter()
    api = make_kubelet_api(captures=CaptureTaps(lambda: None, {"default/a": port}))
    await api.start("127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{api.port}", port
    finally:
        await api.stop()


async def test_get_capture_streams_a_pods_packets_then_removes_its_tap(
    served: tuple[str, FakeAdapter],
) -> None:
    base, port = served
    async with aiohttp.ClientSession() as http:
        query = {"pod": "default/a", "format": "pcap", "count": "2", "duration": "30"}
        request = asyncio.ensure_future(http.get(f"{base}/capture", params=query))
        await wait_for(lambda: port.tap is not None, what="the capture's tap on eth0")
        for sport in (40000, 40001, 40002):  # the third is past count: not captured
            port.tap(tcp(sport=sport), 1.0, sport == 40000)
        async with await request as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "application/vnd.tcpdump.pcap"
            body = await resp.read()
    reader = CaptureReader()
    reader.feed(body)
    assert [wire.decode_ipv4(p[1]).src for p in reader.packets] == [POD_A, POD_A]
    assert port.tap is None  # idle again


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ({"pod": "default/x"}, 404, "pod default/x has no eth0 on this node"),
        ({}, 404, "underlay socket is not open yet"),
        ({"pod": "default/a", "duration": "soon"}, 400, "duration must be seconds"),
        ({"pod": "default/a", "count": "many"}, 400, "count must be a whole number"),
    ],
)
async def test_bad_captures_are_a_status_naming_the_problem(
    served: tuple[str, FakeAdapter], query: dict[str, str], status: int, message: str
) -> None:
    base, port = served
    async with aiohttp.ClientSession() as http, http.get(f"{base}/capture", params=query) as r:
        assert r.status == status
        assert message in (await r.json())["message"]
    assert port.tap is None


@pytest.mark.parametrize(
    "body",
    [{"action": "reboot"}, {"action": "freeze", "seconds": 0}, {"action": "freeze"}, ["kill"]],
)
async def test_lifecycle_rejects_what_it_does_not_do(
    served: tuple[str, FakeAdapter], body: object
) -> None:
    base, _ = served
    async with aiohttp.ClientSession() as http, http.post(f"{base}/lifecycle", json=body) as r:
        assert r.status == 400
        assert "POST /lifecycle" in (await r.json())["message"]
