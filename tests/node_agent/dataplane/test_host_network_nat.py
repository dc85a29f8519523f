"""kube-proxy with backends at the node's own addresses: hostNetwork pods and kube-dns.

A hostNetwork pod's endpoint is its node's IP; kube-dns' is the node-local forwarder on the
gateway.  Pods reach them through the host TUN with their own address as source; the node's
kernel (a hostNetwork client) is given the service address as source, so the reply comes back
through the router to be un-NATed instead of staying inside the kernel.
"""

from __future__ import annotations

from knemu.node_agent.dataplane.router import OUT_HOST, OUT_POD, OUT_UNDERLAY
from knemu.node_agent.kubeproxy.service_table import Backend
from knemu.proto import wire

from .._cluster import POD_A, UNDERLAY2, VIP, pair, syn, tcp, valid, web

NODE_1 = "192.168.59.11"
GW_1 = "10.244.1.1"


def test_a_pod_reaches_a_host_network_backend_on_its_node() -> None:
    p = pair()
    p.set_service(*web([Backend(NODE_1, 8089, True)]))
    out = p.r1.handle_pod("a", syn(POD_A, VIP, 40000, 80), 1.0)
    assert out is not None and out[0] == OUT_HOST
    ip = valid(out[2])
    assert (ip.src, ip.dst, wire.decode_tcp(ip.payload).dst_port) == (POD_A, NODE_1, 8089)
    back = p.r1.handle_host(tcp(NODE_1, POD_A, 8089, 40000, wire.TCP_SYN | wire.TCP_ACK), 1.1)
    assert back is not None and back[:2] == (OUT_POD, "a")
    assert valid(back[2]).src == VIP
    assert p.r1.statistics()["snat"] == 0


def test_the_node_itself_reaches_a_service_it_backs() -> None:
    p = pair()
    for backend in (NODE_1, GW_1):
        p.set_service(*web([Backend(backend, 8089, True)]))
        sport = 41000 if backend == NODE_1 else 42000
        out = p.r1.handle_host(syn(GW_1, VIP, sport, 80), 1.0)
        assert out is not None and out[0] == OUT_HOST
        ip = valid(out[2])
        seg = wire.decode_tcp(ip.payload)
        # from the service address: the kernel's reply is routed to the host TUN, to us
        assert (ip.src, ip.dst, seg.dst_port) == (VIP, backend, 8089), backend
        reply = tcp(backend, VIP, 8089, seg.src_port, wire.TCP_SYN | wire.TCP_ACK)
        back = p.r1.handle_host(reply, 1.1)
        assert back is not None and back[0] == OUT_HOST
        rip = valid(back[2])
        rseg = wire.decode_tcp(rip.payload)
        assert (rip.src, rseg.src_port, rip.dst, rseg.dst_port) == (VIP, 80, GW_1, sport)


def test_the_node_reaching_a_pod_backend_keeps_its_address() -> None:
    p = pair()
    p.set_service(*web([Backend(POD_A, 8080, True)]))
    out = p.r1.handle_host(syn(GW_1, VIP, 43000, 80), 1.0)
    assert out is not None and out[:2] == (OUT_POD, "a")
    assert valid(out[2]).src == GW_1


def test_the_node_reaches_a_host_network_backend_on_another_node_over_the_overlay() -> None:
    p = pair()
    p.set_service(*web([Backend(UNDERLAY2, 8090, True)]))
    for client, sport in ((GW_1, 44000), (NODE_1, 45000)):
        out = p.r1.handle_host(syn(client, VIP, sport, 80), 1.0)
        assert out is not None and out[0] == OUT_UNDERLAY and out[1][0] == UNDERLAY2, client
        at_node_2 = p.underlay(out, 1.0)  # node-2's router hands it to node-2's host
        assert at_node_2 is not None and at_node_2[0] == OUT_HOST
        ip = valid(at_node_2[2])
        seg = wire.decode_tcp(ip.payload)
        # masqueraded to node-1's gateway, which node-2 routes back through the overlay
        assert (ip.src, ip.dst, seg.dst_port) == (GW_1, UNDERLAY2, 8090), client
        reply = tcp(UNDERLAY2, GW_1, 8090, seg.src_port, wire.TCP_SYN | wire.TCP_ACK)
        back = p.underlay(p.r2.handle_host(reply, 1.1), 1.1)
        assert back is not None and back[0] == OUT_HOST
        rip = valid(back[2])
        rseg = wire.decode_tcp(rip.payload)
        assert (rip.src, rseg.src_port, rip.dst, rseg.dst_port) == (VIP, 80, client, sport)


def test_the_host_sending_to_a_node_ip_outside_any_service_is_still_dropped() -> None:
    p = pair()
    # The kernel routes another node's IP out of its underlay interface, never into the host
    # TUN; if such a packet shows up anyway it is not a translated flow and must not loop.
    out = p.r1.handle_host(syn(GW_1, "192.168.59.99", 46000, 80), 1.0)
    assert out is None and p.r1.statistics()["drop_no_route"] == 1
