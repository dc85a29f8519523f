"""Super-packets through the router: routed once, cut for the underlay, merged for a pod."""

from __future__ import annotations

from knemu.node_agent.dataplane import offload
from knemu.node_agent.dataplane.batching import route_underlay_batch
from knemu.node_agent.dataplane.router import OUT_POD, OUT_UNDERLAY, LocalNode, Router
from knemu.proto.wire import ipv4_header_checksum

from .test_offload import tcp_packet

POD1, POD2 = b"\x0a\xf4\x01\x02", b"\x0a\xf4\x02\x02"


def node(n: int) -> Router:
    r = Router(LocalNode(f"node-{n}", f"10.250.0.{n}", f"02:00:00:00:00:0{n}",
                         f"10.244.{n}.0/24", f"10.244.{n}.1"))  # fmt: skip
    other = 3 - n
    r.set_peer(f"node-{other}", f"10.244.{other}.0/24", f"10.250.0.{other}",
               f"02:00:00:00:00:0{other}")  # fmt: skip
    r.add_local_pod(f"10.244.{n}.2", "pod")
    return r


def test_a_pod_super_packet_is_routed_once_and_cut_into_vxlan_frames_and_merged_back() -> None:
    sender, receiver = node(1), node(2)
    payload = bytes(range(256)) * 40  # 10240 bytes, 8 segments of 1398 (timestamps: 12 bytes)
    packet = tcp_packet(payload, options=b"\x01\x01\x08\x0a" + bytes(8), complete=False)
    out = sender.handle_pod("pod", packet, 1.0, 1398)
    assert out is not None and out[0] is OUT_UNDERLAY
    counters = sender.statistics()
    assert (counters["forwarded"], counters["offload_super_packets"]) == (1, 1)
    assert counters["offload_segments"] == 8
    frames = offload.cut(out[2], sender.headroom_bytes, 1398)
    assert len(frames) == 8
    for frame in frames:  # whole inner frames within the MTU, TTL decremented, checksums valid
        inner = bytes(frame[22:])
        assert len(inner) <= sender.node.mtu and inner[8] == 63
        assert ipv4_header_checksum(inner) == 0 and offload.tcp4_checksum_ok(inner, 20)
    # the receiving node merges them again for its pod: one super-packet, routed once
    batch = [(bytes(f), ("10.250.0.1", 4789)) for f in frames]
    outputs = route_underlay_batch(receiver, batch, 2.0)
    assert len(outputs) == 1
    (kind, target, merged), gso_size = outputs[0]
    assert (kind, target, gso_size) == (OUT_POD, "pod", 1398)
    assert bytes(merged[52:]) == payload
    counters = receiver.statistics()
    assert (counters["decapsulated"], counters["delivered"]) == (8, 1)
    assert counters["offload_segments"] == 8


def test_a_super_packet_whose_segments_exceed_the_mtu_is_refused() -> None:
    sender = node(1)
    packet = tcp_packet(bytes(6000), complete=False)
    out = sender.handle_pod("pod", packet, 1.0, 2000)  # 2040-byte segments > MTU 1450
    assert out is not None and out[0] is not OUT_UNDERLAY  # ICMP fragmentation needed
    assert sender.statistics()["forwarded"] == 0
    # and the next ordinary packet is judged by its own length again
    assert sender.handle_pod("pod", tcp_packet(b"x"), 1.0) is not None
    assert sender.statistics()["forwarded"] == 1
