"""The taps ``/capture`` installs on a node's adapters (``kubelet.capture.CaptureTaps``), with
fake adapters: installed while a capture runs, removed after, and cheap when the reader lags."""

from __future__ import annotations

import pytest

from knemu.node_agent.dataplane.capture import (
    CaptureReader,
    CaptureSession,
    CaptureStatistics,
    raw_ipv4_udp,
)
from knemu.node_agent.kubelet.capture import CaptureTaps
from knemu.proto import wire

POD_A, POD_B = "10.244.1.5", "10.244.2.7"
NODE_1, NODE_2 = ("192.168.59.11", 4789), ("192.168.59.12", 4789)


def tcp(src: str = POD_A, dst: str = POD_B, sport: int = 40000, dport: int = 80) -> bytes:
    seg = wire.TcpSegment(sport, dport, seq=1, ack=0, flags=wire.TCP_SYN, payload=b"")
    return wire.tcp_packet(src, dst, seg)


def vxlan(inner: bytes, src: tuple[str, int] = NODE_1, dst: tuple[str, int] = NODE_2) -> bytes:
    frame = wire.encode_ethernet(
        wire.EthernetFrame(b"\x02" + bytes(5), b"\x02" + bytes(4) + b"\x01", 0x0800, inner)
    )
    return raw_ipv4_udp(wire.encode_vxlan(1, frame), src, dst, ident=7)


class FakeAdapter:
    tap = None


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
