"""kube-proxy: DNAT/un-NAT, backend choice per mode, affinity, refusal, hairpin, flushes."""

from __future__ import annotations

import collections

import pytest

from knemu.node_agent.dataplane.router import OUT_HOST, OUT_POD, OUT_UNDERLAY, Router
from knemu.node_agent.events import FlowRefused, FlowTranslated
from knemu.node_agent.kubeproxy.service_table import Backend, ServiceEntry, ServicePortEntry
from knemu.proto import wire

from .._cluster import POD_A, POD_B, POD_C, POD_D, VIP, node, pair, syn, tcp, valid, web

B_BOTH = [Backend(POD_B, 8080, True), Backend(POD_D, 8080, True)]


def test_dnat_unnat_round_trip_across_nodes() -> None:
    p = pair()
    p.set_service(*web(B_BOTH))
    out = p.r1.handle_pod("a", syn(POD_A, VIP, 40000, 80), 1.0)
    assert out is not None and out[0] == OUT_UNDERLAY
    ip = valid(bytes(out[2])[22:])
    assert ip.src == POD_A and ip.dst in (POD_B, POD_D)
    backend_port = "b" if ip.dst == POD_B else "d"
    seg = wire.decode_tcp(ip.payload)
    assert seg.dst_port == 8080 and seg.src_port == 40000
    delivered = p.underlay(out, 1.0)
    assert delivered is not None and delivered[:2] == (OUT_POD, backend_port)
    # The backend answers its own address; the client's node un-NATs it back to the VIP.
    synack = tcp(ip.dst, POD_A, 8080, 40000, wire.TCP_SYN | wire.TCP_ACK)
    back = p.underlay(p.r2.handle_pod(backend_port, synack, 1.1), 1.1)
    assert back is not None and back[:2] == (OUT_POD, "a")
    reply = valid(back[2])
    rseg = wire.decode_tcp(reply.payload)
    assert (reply.src, rseg.src_port, reply.dst, rseg.dst_port) == (VIP, 80, POD_A, 40000)
    entry = p.r1.table_snapshot()["conntrack"][0]
    assert entry["state"] == "ESTABLISHED" and entry["replied"]
    nats = [e.nat for e in p.events if isinstance(e, FlowTranslated)]
    assert nats == ["dnat", "unnat"]


def test_udp_checksum_zero_stays_zero_and_nonzero_stays_valid() -> None:
    p = pair()
    p.set_service(*web([Backend(POD_C, 5353, True)], protocol="UDP", port=53))
    for with_sum in (False, True):
        pkt = wire.udp_packet(POD_A, VIP, 3000 + with_sum, 53, b"query", with_checksum=with_sum)
        out = p.r1.handle_pod("a", pkt, 1.0)
        assert out is not None and out[:2] == (OUT_POD, "c")
        ip = valid(out[2])
        assert (ip.dst, wire.decode_udp(ip.payload).dst_port) == (POD_C, 5353)
        assert (ip.payload[6:8] == b"\0\0") is (not with_sum)


def _spread(
    r: Router, clients: int, now: float = 1.0, base: int = 10000
) -> collections.Counter[str]:
    seen: collections.Counter[str] = collections.Counter()
    for i in range(clients):
        out = r.handle_host(syn("10.244.1.1", VIP, base + i, 80), now)
        assert out is not None
        seen[valid(bytes(out[2])[22:] if out[0] == OUT_UNDERLAY else out[2]).dst] += 1
    return seen


FOUR = [Backend(f"10.244.2.{i}", 80, True) for i in range(10, 14)]


def test_iptables_mode_is_uniform_and_seeded() -> None:
    def run(seed: int) -> collections.Counter[str]:
        r = Router(node(1), seed=seed)
        r.set_peer("node-2", "10.244.2.0/24", "192.168.59.12", "02:00:00:00:00:02")
        r.set_service("default/web", *web(FOUR))
        return _spread(r, 4000)

    first = run(7)
    assert first == run(7)  # same seed, same choices
    assert set(first) == {b.ip for b in FOUR}
    assert all(850 <= n <= 1150 for n in first.values()), first  # ~1000 each


def test_ipvs_rr_cycles_in_order() -> None:
    r = Router(node(1), proxy_mode="ipvs", ipvs_scheduler="rr")
    r.set_peer("node-2", "10.244.2.0/24", "192.168.59.12", "02:00:00:00:00:02")
    r.set_service("default/web", *web(FOUR))
    order = []
    for i in range(8):
        out = r.handle_host(syn("10.244.1.1", VIP, 20000 + i, 80), 1.0)
        assert out is not None
        order.append(valid(bytes(out[2])[22:]).dst)
    assert order == [b.ip for b in FOUR] * 2


def test_ipvs_lc_prefers_least_active_and_sh_pins_clients() -> None:
    r = Router(node(1), proxy_mode="ipvs", ipvs_scheduler="lc")
    r.set_peer("node-2", "10.244.2.0/24", "192.168.59.12", "02:00:00:00:00:02")
    r.set_service("default/web", *web(FOUR[:2]))
    assert _spread(r, 10) == {FOUR[0].ip: 5, FOUR[1].ip: 5}
    # Connections to backend 0 close (RST -> entries expire after 10 s): lc now prefers it.
    for i in range(0, 10, 2):
        r.handle_host(tcp("10.244.1.1", VIP, 10000 + i, 80, wire.TCP_RST), 2.0)
    r.expire(20.0)
    assert _spread(r, 7, now=20.0, base=50000) == {FOUR[0].ip: 6, FOUR[1].ip: 1}

    sh = Router(node(1), proxy_mode="ipvs", ipvs_scheduler="sh")
    sh.set_peer("node-2", "10.244.2.0/24", "192.168.59.12", "02:00:00:00:00:02")
    sh.set_service("default/web", *web(FOUR))
    assert len(_spread(sh, 20)) == 1  # one source IP, one backend


def test_userspace_round_robin() -> None:
    r = Router(node(1), proxy_mode="userspace")
    r.set_peer("node-2", "10.244.2.0/24", "192.168.59.12", "02:00:00:00:00:02")
    r.set_service("default/web", *web(FOUR))
    assert _spread(r, 12) == {b.ip: 3 for b in FOUR}


def test_client_ip_affinity_pins_15_connections() -> None:
    p = pair()
    p.set_service(*web(FOUR, affinity_s=10800.0))
    dsts = set()
    for i in range(15):
        out = p.r1.handle_pod("a", syn(POD_A, VIP, 30000 + i, 80), 1.0 + i)
        assert out is not None
        dsts.add(valid(bytes(out[2])[22:]).dst)
    assert len(dsts) == 1
    assert p.r1.next_timer() is not None
    p.r1.expire(1.0 + 14 + 10800.5)  # affinity and SYN_SENT entries idle past their timeouts
    assert p.r1.statistics()["conntrack_entries"] == 0
    assert p.r1.next_timer() is None


def test_no_endpoints_refuses_tcp_with_rst_and_udp_with_icmp() -> None:
    p = pair()
    p.set_service(*web([Backend(POD_B, 8080, False)]))
    out = p.r1.handle_pod("a", syn(POD_A, VIP, 40000, 80, seq=99), 1.0)
    assert out is not None and out[:2] == (OUT_POD, "a")
    ip = valid(out[2])
    seg = wire.decode_tcp(ip.payload)
    assert (ip.src, ip.dst, seg.src_port, seg.dst_port) == (VIP, POD_A, 80, 40000)
    assert (seg.flags, seg.ack) == (wire.TCP_RST | wire.TCP_ACK, 100)
    p.set_service(*web([], protocol="UDP"))
    out = p.r1.handle_pod("a", wire.udp_packet(POD_A, VIP, 5000, 80, b"x"), 1.0)
    assert out is not None and out[:2] == (OUT_POD, "a")
    ip = valid(out[2])
    icmp = wire.decode_icmp(ip.payload)
    assert (ip.src, icmp.type, icmp.code) == (VIP, 3, 3)
    assert p.r1.statistics()["refused_no_endpoints"] == 2
    assert [e.reason for e in p.events if isinstance(e, FlowRefused)] == ["no_endpoints"] * 2


def test_terminating_endpoints_fallback() -> None:
    p = pair()
    terminating = Backend(POD_B, 8080, ready=False, serving=True, terminating=True)
    gone = Backend(POD_D, 8080, ready=False, serving=False, terminating=True)
    p.set_service(*web([terminating, gone]))
    out = p.r1.handle_pod("a", syn(POD_A, VIP, 40000, 80), 1.0)
    assert out is not None and valid(bytes(out[2])[22:]).dst == POD_B


def test_hairpin_snat_to_gateway_and_back() -> None:
    p = pair()
    p.set_service(*web([Backend(POD_A, 8080, True)]))
    out = p.r1.handle_pod("a", syn(POD_A, VIP, 40000, 80), 1.0)
    assert out is not None and out[:2] == (OUT_POD, "a")
    ip = valid(out[2])
    assert (ip.src, ip.dst) == ("10.244.1.1", POD_A)
    reply = tcp(POD_A, "10.244.1.1", 8080, 40000, wire.TCP_SYN | wire.TCP_ACK)
    back = p.r1.handle_pod("a", reply, 1.1)
    assert back is not None and back[:2] == (OUT_POD, "a")
    rip = valid(back[2])
    assert (rip.src, rip.dst, wire.decode_tcp(rip.payload).src_port) == (VIP, POD_A, 80)
    assert p.r1.statistics()["snat"] == 1


def test_dns_service_to_gateway_goes_to_host_and_back() -> None:
    p = pair()
    dns = ServiceEntry(
        "kube-system/kube-dns", ("10.96.0.10",), (ServicePortEntry("dns", "UDP", 53),)
    )
    p.r1.set_service(dns.key, dns, {"dns": [Backend("10.244.1.1", 53, True)]})
    out = p.r1.handle_pod("a", wire.udp_packet(POD_A, "10.96.0.10", 5555, 53, b"q"), 1.0)
    assert out is not None and out[0] == OUT_HOST and valid(out[2]).dst == "10.244.1.1"
    answer = wire.udp_packet("10.244.1.1", POD_A, 53, 5555, b"a")
    back = p.r1.handle_host(answer, 1.1)
    assert back is not None and back[:2] == (OUT_POD, "a")
    assert valid(back[2]).src == "10.96.0.10"


def test_udp_flows_flushed_and_tcp_reset_when_backend_leaves() -> None:
    p = pair()
    p.set_service(*web([Backend(POD_B, 53, True)], protocol="UDP"))
    p.r1.handle_pod("a", wire.udp_packet(POD_A, VIP, 5000, 80, b"1"), 1.0)
    assert p.r1.statistics()["conntrack_entries"] == 1
    p.set_service(*web([Backend(POD_D, 53, True)], protocol="UDP"))
    assert p.r1.statistics()["conntrack_entries"] == 0  # flushed at once
    out = p.r1.handle_pod("a", wire.udp_packet(POD_A, VIP, 5000, 80, b"2"), 2.0)
    assert out is not None and valid(bytes(out[2])[22:]).dst == POD_D

    p.set_service(*web([Backend(POD_B, 8080, True)]))
    p.r1.handle_pod("a", syn(POD_A, VIP, 40000, 80), 3.0)
    p.set_service(*web([Backend(POD_D, 8080, True)]))
    out = p.r1.handle_pod("a", tcp(POD_A, VIP, 40000, 80, wire.TCP_ACK, b"data"), 4.0)
    assert out is not None and out[:2] == (OUT_POD, "a")
    seg = wire.decode_tcp(valid(out[2]).payload)
    assert seg.flags & wire.TCP_RST and p.r1.statistics()["refused_stale_backend"] == 1
    assert p.r1.statistics()["conntrack_entries"] == 0


def test_not_ready_backend_keeps_tcp_flows() -> None:
    p = pair()
    p.set_service(*web([Backend(POD_B, 8080, True)]))
    p.r1.handle_pod("a", syn(POD_A, VIP, 40000, 80), 1.0)
    p.set_service(
        *web(
            [
                Backend(POD_B, 8080, False, serving=True, terminating=True),
                Backend(POD_D, 8080, True),
            ]
        )
    )
    out = p.r1.handle_pod("a", tcp(POD_A, VIP, 40000, 80, wire.TCP_ACK, b"more"), 2.0)
    assert out is not None and valid(bytes(out[2])[22:]).dst == POD_B


@pytest.mark.parametrize(("dst", "port", "code"), [(VIP, 81, 3), ("10.96.5.5", 80, 0)])
def test_removed_service_or_wrong_port_is_unreachable(dst: str, port: int, code: int) -> None:
    p = pair()
    p.set_service(*web(B_BOTH))
    out = p.r1.handle_pod("a", syn(POD_A, dst, 1, port), 1.0)
    assert out is not None and out[:2] == (OUT_POD, "a")
    icmp = wire.decode_icmp(valid(out[2]).payload)
    assert (icmp.type, icmp.code) == (3, code)


def test_remove_service_removes_rules_and_table_entries() -> None:
    p = pair()
    p.set_service(*web(B_BOTH))
    p.r1.handle_pod("a", syn(POD_A, VIP, 1, 80), 1.0)
    p.r1.remove_service("default/web")
    out = p.r1.handle_pod("a", syn(POD_A, VIP, 2, 80), 1.0)
    assert out is not None and wire.decode_icmp(valid(out[2]).payload).code == 0
    assert p.r1.statistics()["refused_no_service"] == 1
    assert p.r1.table_snapshot()["services"] == []


def test_dead_node_endpoints_leave_the_table() -> None:
    p = pair()
    p.set_service(*web(B_BOTH))
    p.set_service(*web([Backend(POD_D, 8080, True)]))
    p.r1.remove_peer("node-2")
    snap = p.r1.table_snapshot()
    ips = [b["ip"] for s in snap["services"] for port in s["ports"] for b in port["backends"]]
    assert ips == [POD_D] and snap["peers"] == []


def test_conntrack_timeouts_by_state() -> None:
    p = pair()
    p.set_service(*web(B_BOTH, protocol="UDP"))
    p.r1.handle_pod("a", wire.udp_packet(POD_A, VIP, 7, 80, b"x"), 0.0)
    p.r1.expire(29.0)
    assert p.r1.statistics()["conntrack_entries"] == 1
    p.r1.expire(31.0)
    assert p.r1.statistics()["conntrack_entries"] == 0
    p.set_service(*web(B_BOTH))
    p.r1.handle_pod("a", syn(POD_A, VIP, 8, 80), 0.0)
    timer = p.r1.next_timer()
    assert timer == 120.0  # unanswered SYN
    p.r1.handle_pod("a", tcp(POD_A, VIP, 8, 80, wire.TCP_FIN | wire.TCP_ACK), 50.0)
    p.r1.expire(169.0)
    assert p.r1.statistics()["conntrack_entries"] == 1
    p.r1.expire(171.0)
    assert p.r1.statistics()["conntrack_entries"] == 0


def test_icmp_error_from_backend_is_unnatted_to_the_service_address() -> None:
    """A UDP backend with nothing listening answers port unreachable; the client must see it
    from the VIP, quoting what it sent (the VIP), or its socket never learns of the refusal."""
    p = pair()
    p.set_service(*web([Backend(POD_C, 5353, True)], protocol="UDP", port=53))
    query = wire.udp_packet(POD_A, VIP, 4444, 53, b"q")
    out = p.r1.handle_pod("a", query, 1.0)
    assert out is not None and out[:2] == (OUT_POD, "c")
    translated = bytes(out[2])
    error = wire.icmp_error_for(translated, 3, 3, POD_C)  # what POD_C's kernel sends back
    assert error is not None
    back = p.r1.handle_pod("c", error, 1.1)
    assert back is not None and back[:2] == (OUT_POD, "a")
    ip = valid(back[2])
    icmp = wire.decode_icmp(ip.payload)  # verifies the recomputed ICMP checksum
    quoted = wire.decode_ipv4(icmp.payload)  # the quoted header checksum verifies too
    assert (ip.src, ip.dst, icmp.type, icmp.code) == (VIP, POD_A, 3, 3)
    assert (quoted.src, quoted.dst) == (POD_A, VIP)
    assert wire.decode_udp(quoted.payload).dst_port == 53


def test_userspace_next_backend_skips_the_failed_one() -> None:
    r = Router(node(1), proxy_mode="userspace")
    r.set_service("default/web", *web(FOUR[:2], affinity_s=60.0))
    first = FOUR[0]
    again = r.next_backend("default/web:http", first.ip, first.port, POD_A, 1.0)
    assert again == (FOUR[1].ip, FOUR[1].port)
    assert r.next_backend("default/web:nope", first.ip, 80, POD_A, 1.0) is None
    r.set_service("default/web", *web([first]))
    assert r.next_backend("default/web:http", first.ip, first.port, POD_A, 1.0) is None


def test_node_kernel_clients_outside_the_cluster_cidr_are_masqueraded() -> None:
    """A shell on node-1 curling a ClusterIP from its node IP: the backend on node-2 must
    answer the gateway (routed back over VXLAN), not the node IP (which it would reach
    directly, bypassing the un-NAT)."""
    p = pair()
    p.set_service(*web([Backend(POD_B, 8080, True)]))
    out = p.r1.handle_host(syn("192.168.59.11", VIP, 45000, 80), 1.0)
    assert out is not None and out[0] == OUT_UNDERLAY
    fwd = valid(bytes(out[2])[22:])
    assert (fwd.src, fwd.dst) == ("10.244.1.1", POD_B)
    reply = tcp(POD_B, "10.244.1.1", 8080, 45000, wire.TCP_SYN | wire.TCP_ACK)
    back = p.underlay(p.r2.handle_pod("b", reply, 1.1), 1.1)
    assert back is not None and back[0] == OUT_HOST
    ip = valid(back[2])
    assert (ip.src, ip.dst, wire.decode_tcp(ip.payload).src_port) == (VIP, "192.168.59.11", 80)


def _fragments(packet: bytes, size: int) -> list[bytes]:
    """Split an IPv4 packet (no options) into fragments of ``size`` payload bytes (RFC 791)."""
    ip = wire.decode_ipv4(packet)
    out = []
    for off in range(0, len(ip.payload), size):
        more = off + size < len(ip.payload)
        flags = (wire.IP_FLAG_MF if more else 0) | off // 8
        out.append(
            wire.encode_ipv4(
                wire.IPv4Packet(
                    ip.src,
                    ip.dst,
                    ip.proto,
                    ip.payload[off : off + size],
                    ident=777,
                    flags_fragment=flags,
                )
            )
        )
    return out


def test_fragmented_udp_to_a_service_follows_the_first_fragment() -> None:
    p = pair()
    p.set_service(*web([Backend(POD_C, 9000, True)], protocol="UDP"))
    datagram = wire.udp_packet(POD_A, VIP, 6000, 80, bytes(range(256)) * 10)
    pieces = [p.r1.handle_pod("a", f, 1.0) for f in _fragments(datagram, 1200)]
    assert all(o is not None and o[:2] == (OUT_POD, "c") for o in pieces)
    decoded = [wire.decode_ipv4(bytes(o[2])) for o in pieces if o is not None]
    assert {(d.src, d.dst) for d in decoded} == {(POD_A, POD_C)}
    whole = b"".join(d.payload for d in decoded)
    rebuilt = wire.ip_packet(POD_A, POD_C, wire.PROTO_UDP, whole)
    assert wire.transport_checksum_ok(rebuilt)  # the checksum in fragment 1 covers it all
    assert wire.decode_udp(whole).dst_port == 9000
    p.r1.expire(40.0)
    assert p.r1._fragments == {}


def test_reply_tuple_clash_remaps_the_source_port() -> None:
    """One client port to two services sharing a backend: the second flow's translated source
    port is remapped so both replies stay distinguishable, and each is un-NATed to its VIP."""
    p = pair()
    other_vip = "10.96.0.21"
    backend = [Backend(POD_C, 8080, True)]
    p.set_service(*web(backend))
    other = ServiceEntry("default/other", (other_vip,), (ServicePortEntry("http", "TCP", 80),))
    p.r1.set_service(other.key, other, {"http": backend})
    first = p.r1.handle_pod("a", syn(POD_A, VIP, 40000, 80), 1.0)
    second = p.r1.handle_pod("a", syn(POD_A, other_vip, 40000, 80), 1.0)
    assert first is not None and second is not None
    port1 = wire.decode_tcp(valid(first[2]).payload).src_port
    port2 = wire.decode_tcp(valid(second[2]).payload).src_port
    assert port1 == 40000 and port2 != 40000
    for port, vip in ((port1, VIP), (port2, other_vip)):
        reply = tcp(POD_C, POD_A, 8080, port, wire.TCP_SYN | wire.TCP_ACK)
        back = p.r1.handle_pod("c", reply, 1.1)
        assert back is not None and back[:2] == (OUT_POD, "a")
        ip = valid(back[2])
        assert (ip.src, wire.decode_tcp(ip.payload).dst_port) == (vip, 40000)


def test_new_syn_reusing_a_finished_flows_tuple_picks_a_live_backend() -> None:
    # Linux conntrack forgets a FIN_WAIT/CLOSE entry when a new SYN reuses its tuple
    # (TIME_WAIT reuse), so the new connection goes through the NAT rules again.
    p = pair()
    p.set_service(*web([Backend(POD_B, 8080, True)]))
    first = p.r1.handle_pod("a", syn(POD_A, VIP, 45678, 80), 1.0)
    assert first is not None and valid(bytes(first[2])[22:]).dst == POD_B
    p.r1.handle_pod("a", tcp(POD_A, VIP, 45678, 80, wire.TCP_FIN | wire.TCP_ACK), 1.1)
    assert p.r1.table_snapshot()["conntrack"][0]["state"] == "FIN_WAIT"
    # The old backend leaves: the entry is dead, but a new SYN must not be reset.
    p.set_service(*web([Backend(POD_D, 8080, True)]))
    again = p.r1.handle_pod("a", syn(POD_A, VIP, 45678, 80, seq=9000), 2.0)
    assert again is not None and again[0] == OUT_UNDERLAY
    assert valid(bytes(again[2])[22:]).dst == POD_D
    assert p.r1.statistics().get("refused_stale_backend", 0) == 0
    # The old backend only not ready (still listed): the new SYN still avoids it.
    p.r1.handle_pod("a", tcp(POD_A, VIP, 45678, 80, wire.TCP_FIN | wire.TCP_ACK), 2.1)
    p.set_service(*web([Backend(POD_D, 8080, False), Backend(POD_B, 8080, True)]))
    third = p.r1.handle_pod("a", syn(POD_A, VIP, 45678, 80, seq=12000), 3.0)
    assert third is not None and valid(bytes(third[2])[22:]).dst == POD_B
