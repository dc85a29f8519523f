"""Encapsulation backends: vectors, round trips through two routers, and fuzz (parse or
reject, never crash)."""

from __future__ import annotations

import dataclasses
import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from knemu.errors import ConfigError
from knemu.node_agent.dataplane import backends
from knemu.node_agent.dataplane.backends.ipip import IPPROTO_IPIP, encode_ipip
from knemu.node_agent.dataplane.router import OUT_HOST, OUT_POD, OUT_UNDERLAY, Router
from knemu.node_agent.events import DropReason
from knemu.node_agent.kubeproxy.service_table import Backend
from knemu.proto import wire

from ..._cluster import MAC1, MAC2, POD_A, POD_B, UNDERLAY1, UNDERLAY2, VIP, node, syn, web

FUZZ = settings(
    max_examples=int(os.environ.get("KNEMU_FUZZ_EXAMPLES", "400")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
INNER = wire.udp_packet(POD_A, POD_B, 5000, 53, b"hello")
PEER = backends.PeerAddress(UNDERLAY2, MAC2, 4789)


def test_vxlan_vector() -> None:
    b = backends.create("vxlan", vni=1, vtep_mac=MAC1)
    data, dst = b.encapsulate(INNER, PEER)
    assert dst == (UNDERLAY2, 4789)
    # RFC 7348 section 5: flags 08, VNI 000001, then Ethernet dst (peer), src (us), 0800
    assert data[:22].hex() == "08000000000001000200000000020200000000010800"
    assert data[22:] == INNER
    receiver = backends.create("vxlan", vni=1, vtep_mac=MAC2)
    assert receiver.decapsulate(data, (UNDERLAY1, 4789)) == INNER
    assert b.overhead_bytes == 50


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d[:30], DropReason.TRUNCATED),
        (lambda d: b"\x00" + d[1:], DropReason.BAD_VXLAN_HEADER),
        (lambda d: d[:6] + b"\x07" + d[7:], DropReason.WRONG_VNI),
        (lambda d: d[:8] + b"\x02\x00\x00\x00\x00\x09" + d[14:], DropReason.WRONG_MAC),
        (lambda d: d[:20] + b"\x86\xdd" + d[22:], DropReason.NOT_IPV4),
    ],
)
def test_vxlan_rejects(mutate: object, reason: DropReason) -> None:
    data, _ = backends.create("vxlan", vtep_mac=MAC1).encapsulate(INNER, PEER)
    receiver = backends.create("vxlan", vtep_mac=MAC2)
    assert receiver.decapsulate(mutate(data), (UNDERLAY1, 4789)) is reason  # type: ignore[operator]


def test_ipip_vector() -> None:
    b = backends.create("ipip", vtep_mac=MAC1)
    data, dst = b.encapsulate(INNER, PEER)
    assert (data, dst) == (INNER, (UNDERLAY2, 0))  # the raw socket's kernel adds the header
    outer = encode_ipip(UNDERLAY1, UNDERLAY2, INNER, ident=7)
    assert outer[:20].hex() == (
        "4500" + f"{20 + len(INNER):04x}" + "0007" + "0000" + "4004"
        + f"{wire.decode_ipv4(outer).checksum:04x}" + "c0a83b0b" + "c0a83b0c"
    )  # fmt: skip
    parsed = wire.decode_ipv4(outer)  # verifies the header checksum
    assert parsed.proto == IPPROTO_IPIP and parsed.payload == INNER
    assert b.decapsulate(outer, (UNDERLAY1, 0)) == INNER
    assert b.overhead_bytes == 20


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x45" * 30, DropReason.TRUNCATED),
        (b"\x65" + encode_ipip(UNDERLAY1, UNDERLAY2, INNER)[1:], DropReason.NOT_IPV4),
        (wire.ip_packet(UNDERLAY1, UNDERLAY2, 17, INNER), DropReason.BAD_OUTER_HEADER),
        (b"\x4f" + encode_ipip(UNDERLAY1, UNDERLAY2, INNER)[1:40], DropReason.TRUNCATED),
    ],
)
def test_ipip_rejects(data: bytes, reason: DropReason) -> None:
    assert backends.IpipBackend().decapsulate(data, (UNDERLAY1, 0)) is reason


def test_unknown_backend_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="'gre' is not one of vxlan, ipip"):
        Router(dataclasses.replace(node(1), backend="gre"))


@FUZZ
@given(st.binary(max_size=120))
def test_decapsulate_parses_or_rejects(data: bytes) -> None:
    for b in (backends.create("vxlan", vtep_mac=MAC1), backends.IpipBackend()):
        out = b.decapsulate(data, (UNDERLAY2, 0))
        assert isinstance(out, bytes | DropReason)


def ipip_pair() -> tuple[Router, Router]:
    r1 = Router(dataclasses.replace(node(1), backend="ipip", mtu=1480))
    r2 = Router(dataclasses.replace(node(2), backend="ipip", mtu=1480))
    r1.set_peer("node-2", "10.244.2.0/24", UNDERLAY2, MAC2)
    r2.set_peer("node-1", "10.244.1.0/24", UNDERLAY1, MAC1)
    r1.add_local_pod(POD_A, "a")
    r2.add_local_pod(POD_B, "b")
    return r1, r2


def test_ipip_routers_carry_a_service_flow() -> None:
    r1, r2 = ipip_pair()
    entry, backs = web([Backend(POD_B, 8080, True)])
    r1.set_service(entry.key, entry, backs)
    out = r1.handle_pod("a", syn(POD_A, VIP, 40000, 80), 0.0)
    assert out is not None and out[0] is OUT_UNDERLAY and out[1] == (UNDERLAY2, 0)
    inner = bytes(out[2])
    assert wire.decode_ipv4(inner).dst == POD_B  # DNATed, no headroom: the inner packet
    outer = encode_ipip(UNDERLAY1, UNDERLAY2, inner)  # what the kernel puts on the wire
    got = r2.handle_underlay(outer, (UNDERLAY1, 0), 0.0)
    assert got is not None and got[0] is OUT_POD and got[1] == "b"
    assert wire.decode_ipv4(got[2]).ttl == 62
    assert r2.statistics()["decapsulated"] == 1


def test_ipip_router_drops_bad_outer_and_unknown_peer() -> None:
    _, r2 = ipip_pair()
    assert (
        r2.handle_underlay(wire.ip_packet(UNDERLAY1, UNDERLAY2, 17, INNER), (UNDERLAY1, 0), 0)
        is None
    )
    stranger = encode_ipip("192.168.59.99", UNDERLAY2, INNER)
    assert r2.handle_underlay(stranger, ("192.168.59.99", 0), 0.0) is None
    stats = r2.statistics()
    assert stats["drop_bad_outer_header"] == 1 and stats["drop_unknown_peer"] == 1


def test_ipip_mtu_is_1480() -> None:
    r1, _ = ipip_pair()
    big = wire.udp_packet(POD_A, POD_B, 1, 2, b"x" * (1480 - 28))
    assert r1.handle_pod("a", big, 0.0) is not None
    too_big = wire.udp_packet(POD_A, POD_B, 1, 2, b"x" * (1481 - 28))
    out = r1.handle_pod("a", too_big, 0.0)
    assert out is not None and out[0] is not OUT_UNDERLAY  # ICMP fragmentation needed back


def test_ipip_flow_events_show_the_outer_ip_header() -> None:
    events: list[object] = []
    r1 = Router(dataclasses.replace(node(1), backend="ipip"), flow_sink=events.append)
    r1.set_peer("node-2", "10.244.2.0/24", UNDERLAY2, MAC2)
    r1.add_local_pod(POD_A, "a")
    r1.set_forward_events(True)
    r1.handle_pod("a", INNER, 0.0)
    outer = [e.outer for e in events if getattr(e, "outer", None) is not None]  # type: ignore[attr-defined]
    assert outer and dataclasses.asdict(outer[0]) == {
        "src_ip": UNDERLAY1, "dst_ip": UNDERLAY2, "dst_port": 0, "vni": 0, "encapsulation": "ipip"
    }  # fmt: skip


def test_bgp_hands_other_nodes_pod_packets_to_the_kernel_and_drops_what_it_returns() -> None:
    r1 = Router(dataclasses.replace(node(1), backend="bgp", mtu=1500))
    r1.set_peer("node-2", "10.244.2.0/24", UNDERLAY2, MAC2)  # a pod source, not a route
    r1.add_local_pod(POD_A, "a")
    out = r1.handle_pod("a", INNER, 0.0)  # to 10.244.2.7: no peer table, the kernel's routes
    assert out is not None and out[0] is OUT_HOST and bytes(out[2])[16:20] == INNER[16:20]
    # The kernel has no BGP route (withdrawn) and sends it back into the host TUN: dropped.
    assert r1.handle_host(INNER, 0.0) is None
    assert r1.statistics()["drop_no_route"] == 1
    # Arriving from another node through the kernel: delivered to the local pod.
    back = wire.udp_packet(POD_B, POD_A, 53, 5000, b"hi")
    got = r1.handle_host(back, 0.0)
    assert got is not None and got[:2] == (OUT_POD, "a")


def test_bgp_drops_pod_sources_of_no_current_node() -> None:
    """Native routing has no outer header: the underlay source check is on the pod source
    address, which must be in a current node's podCIDR (or the node's own)."""
    r1 = Router(dataclasses.replace(node(1), backend="bgp", mtu=1500))
    r1.set_peer("node-2", "10.244.2.0/24", UNDERLAY2, MAC2)
    r1.add_local_pod(POD_A, "a")
    stranger = wire.udp_packet("10.244.77.5", POD_A, 53, 5000, b"hi")
    assert r1.handle_host(stranger, 0.0) is None
    assert r1.statistics()["drop_unknown_peer"] == 1
    outside = wire.udp_packet("192.168.59.200", POD_A, 53, 5000, b"hi")  # BGP: reachable
    assert r1.handle_host(outside, 0.0) is not None
    gateway = wire.udp_packet("10.244.1.1", POD_A, 53, 5000, b"hi")
    assert r1.handle_host(gateway, 0.0) is not None
    r1.remove_peer("node-2")  # deleted: its pods' addresses are no node's any more
    assert r1.handle_host(wire.udp_packet(POD_B, POD_A, 53, 5000, b"hi"), 0.0) is None
    assert r1.statistics()["drop_unknown_peer"] == 2


def test_bgp_node_tables_feed_the_speaker_and_the_routers_sources() -> None:
    from knemu.node_agent.dataplane.tables import NodeTables
    from knemu.proto import knemu_pb2 as pb

    routes: list[str] = []
    peers: list[dict[str, str]] = []

    class Sink:
        def set_peer(self, name: str, *args: object, **kw: object) -> None:
            routes.append(name)

        def remove_peer(self, name: str) -> None:
            pass

        def set_service(self, *args: object) -> None:
            pass

        def remove_service(self, key: str) -> None:
            pass

    tables = NodeTables("node-1", Sink(), None, "bgp", None, peers.append)  # type: ignore[arg-type]
    n2 = pb.Node(metadata=pb.ObjectMeta(name="node-2"), pod_cidr="10.244.2.0/24",
                 internal_ip=UNDERLAY2, vtep_mac=MAC2)  # fmt: skip
    n2.metadata.annotations["flannel.alpha.coreos.com/backend-type"] = "bgp"
    tables.apply("ADDED", "Node", n2, None)
    tables.apply("MODIFIED", "Node", n2, n2)
    tables.apply("DELETED", "Node", n2, None)
    assert routes == ["node-2", "node-2"] and peers == [{"node-2": UNDERLAY2}, {}]
