"""kube-proxy with backends at the node's own addresses: hostNetwork pods and kube-dns.

A hostNetwork pod's endpoint is its node's IP; kube-dns' is the node-local forwarder on the
gateway.  Pods reach them through the host TUN with their own address as source; the node's
kernel (a hostNetwork client) is given the service address as source, so the reply comes back
through the router to be un-NATed instead of staying inside the kernel.
"""

from __future__ import annotations

from knemu.node_agent.router import OUT_HOST, OUT_POD
from knemu.node_agent.service_table import Backend
from knemu.proto import wire

from ._cluster import POD_A, VIP, pair, syn, tcp, valid, web

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
