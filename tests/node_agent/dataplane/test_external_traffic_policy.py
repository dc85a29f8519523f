"""externalTrafficPolicy: Local in the service table and the router.

https://kubernetes.io/docs/tasks/access-application-cluster/create-external-load-balancer/
#preserving-the-client-source-ip: external traffic (nodePort, external and LoadBalancer IPs)
goes only to the receiving node's endpoints and keeps the client's address; a node with
endpoints elsewhere but none here drops it; ClusterIP traffic keeps every endpoint.
"""

from __future__ import annotations

from dataclasses import replace

from knemu.errors import ConfigError
from knemu.node_agent.dataplane import tables as t
from knemu.node_agent.dataplane.router import OUT_HOST, OUT_POD, OUT_UNDERLAY
from knemu.node_agent.events import FlowDropped
from knemu.node_agent.kubeproxy.service_table import Backend, ServiceEntry, ServiceTable
from knemu.proto import knemu_pb2 as pb, wire

from .._cluster import POD_A, POD_B, POD_C, UNDERLAY1, VIP, pair, syn, tcp, valid, web

CLIENT = "192.168.59.2"  # the external client on the underlay
GW_1 = "10.244.1.1"
NODE_PORT = 30080
LB_IP = "192.0.2.10"


def local_web(backends: list[Backend]) -> tuple[ServiceEntry, dict[str, list[Backend]]]:
    entry, by_port = web(backends)
    entry = replace(
        entry,
        external_local=True,
        external_ips=(LB_IP,),
        ports=(replace(entry.ports[0], node_port=NODE_PORT),),
    )
    return entry, by_port


def on(node_name: str, ip: str, ready: bool = True) -> Backend:
    return Backend(ip, 8080, ready, node_name=node_name)


def test_outside_client_reaches_a_local_pod_with_its_own_address_and_the_reply_is_unnated() -> None:
    p = pair()
    p.set_service(*local_web([on("node-1", POD_C), on("node-2", POD_B)]))
    for sport in range(40000, 40020):
        # The steered original packet, as the node's kernel forwards it into the host TUN.
        out = p.r1.handle_host(syn(CLIENT, UNDERLAY1, sport, NODE_PORT), 1.0)
        assert out is not None and out[:2] == (OUT_POD, "c")
        pkt = valid(out[2])
        assert (pkt.src, pkt.dst) == (CLIENT, POD_C)  # no SNAT: the pod sees the client
    reply = p.r1.handle_pod("c", tcp(POD_C, CLIENT, 8080, 40000, wire.TCP_SYN | wire.TCP_ACK), 1.1)
    assert reply is not None and reply[0] is OUT_HOST
    back = valid(reply[2])
    assert (back.src, back.dst) == (UNDERLAY1, CLIENT)
    assert wire.decode_tcp(back.payload).src_port == NODE_PORT


def test_load_balancer_address_is_local_too() -> None:
    p = pair()
    p.set_service(*local_web([on("node-1", POD_C), on("node-2", POD_B)]))
    for sport in range(40000, 40020):
        out = p.r1.handle_host(syn(CLIENT, LB_IP, sport, 80), 1.0)
        assert out is not None and out[:2] == (OUT_POD, "c")
        assert valid(out[2]).src == CLIENT


def test_no_local_endpoint_drops_external_traffic_but_cluster_ip_keeps_every_endpoint() -> None:
    p = pair()
    p.set_service(*local_web([on("node-2", POD_B)]))
    assert p.r1.handle_host(syn(CLIENT, UNDERLAY1, 40000, NODE_PORT), 1.0) is None
    drops = [e for e in p.events if isinstance(e, FlowDropped)]
    assert [e.reason for e in drops] == ["no_local_endpoints"]
    # ClusterIP traffic from a pod is internal: the remote endpoint serves it.
    out = p.r1.handle_pod("a", syn(POD_A, VIP, 40001, 80), 1.0)
    assert out is not None and out[0] is OUT_UNDERLAY


def test_the_relay_from_the_node_ip_still_masquerades_and_stays_local() -> None:
    p = pair()
    p.set_service(*local_web([on("node-1", POD_C), on("node-2", POD_B)]))
    for sport in range(41000, 41010):
        out = p.r1.handle_host(syn(UNDERLAY1, VIP, sport, 80), 1.0)
        assert out is not None and out[:2] == (OUT_POD, "c")
        assert valid(out[2]).src == GW_1


def test_cluster_policy_still_masquerades_outside_clients() -> None:
    p = pair()
    entry, backends = local_web([on("node-1", POD_C)])
    p.set_service(replace(entry, external_local=False), backends)
    out = p.r1.handle_host(syn(CLIENT, UNDERLAY1, 40000, NODE_PORT), 1.0)
    assert out is not None and out[:2] == (OUT_POD, "c")
    assert valid(out[2]).src == GW_1


def test_local_endpoint_count_uses_the_terminating_fallback_among_local_ones() -> None:
    table = ServiceTable(node_name="node-1")
    entry, _ = local_web([])
    table.set_service(entry, {"http": [on("node-1", POD_A), on("node-1", POD_C),
                                       on("node-2", POD_B)]})  # fmt: skip
    assert table.local_endpoints("default/web") == 2
    draining = Backend(POD_A, 8080, False, True, True, "node-1")
    table.set_service(entry, {"http": [draining, on("node-2", POD_B)]})
    assert table.local_endpoints("default/web") == 1
    table.set_service(entry, {"http": [on("node-2", POD_B)]})
    assert table.local_endpoints("default/web") == 0
    assert table.local_endpoints("default/nope") == 0


def _svc(policy: str, stype: str = "LoadBalancer", hc: int = 31999) -> pb.Service:
    return pb.Service(
        metadata=pb.ObjectMeta(namespace="default", name="web"),
        type=stype,
        cluster_ip="10.96.0.30",
        ports=[pb.ServicePort(name="http", protocol="TCP", port=80, node_port=NODE_PORT),
               pb.ServicePort(name="dns", protocol="UDP", port=53, node_port=30053)],
        external_traffic_policy=policy,
        health_check_node_port=hc,
    )  # fmt: skip


def test_tables_steer_and_health_check_only_local_services() -> None:
    local, cluster = _svc("Local"), _svc("Cluster", hc=0)
    assert t.local_node_ports([local, cluster]) == {("TCP", NODE_PORT), ("UDP", 30053)}
    assert t.health_check_ports([local, cluster]) == {31999: "default/web"}
    assert t.service_entry(local).external_local and not t.service_entry(cluster).external_local
    assert t.local_node_ports([_svc("Local", stype="ClusterIP")]) == set()


def test_load_balancer_addresses_carry_policy_and_endpoint_nodes() -> None:
    svc = _svc("Local")
    svc.load_balancer_ips.append(LB_IP)
    ep = pb.Endpoint(addresses=[POD_C], node_name="node-1",
                     conditions=pb.EndpointConditions(ready=True))  # fmt: skip
    gone = pb.Endpoint(addresses=[POD_B], node_name="node-2",
                       conditions=pb.EndpointConditions(ready=False))  # fmt: skip
    slices = {("default", "web"): [pb.EndpointSlice(endpoints=[ep, gone])]}
    (addr,) = t.load_balancer_addresses([svc], lambda ns, name: slices.get((ns, name), []))
    assert (addr.service, addr.ip, addr.local_only) == ("default/web", LB_IP, True)
    assert addr.endpoint_nodes == {"node-1"}
    assert t.load_balancer_addresses([_svc("Local", stype="NodePort")], lambda ns, n: []) == []
    nodes = [pb.Node(metadata=pb.ObjectMeta(name="node-1"), ready=True),
             pb.Node(metadata=pb.ObjectMeta(name="node-2"))]  # fmt: skip
    assert t.ready_nodes(nodes) == ["node-1"]


def test_source_ranges_guard_the_load_balancer_address_only() -> None:
    p = pair()
    entry, backends = local_web([on("node-1", POD_C)])
    entry = replace(entry, external_local=False, load_balancer_ips=(LB_IP,),
                    source_ranges=("192.168.59.0/30", "2001:db8::/32"))  # fmt: skip
    p.set_service(entry, backends)
    out = p.r1.handle_host(syn(CLIENT, LB_IP, 40000, 80), 1.0)  # .2 is in the /30
    assert out is not None and out[:2] == (OUT_POD, "c")
    assert p.r1.handle_host(syn("192.168.59.9", LB_IP, 40001, 80), 1.0) is None
    drops = [e for e in p.events if isinstance(e, FlowDropped)]
    assert [e.reason for e in drops] == ["load_balancer_source_range"]
    assert drops[0].flow is not None and drops[0].flow.src_ip == "192.168.59.9"
    # The nodePort is not a LoadBalancer address: not guarded (as kube-proxy's KUBE-FW).
    out = p.r1.handle_host(syn("192.168.59.9", UNDERLAY1, 40002, NODE_PORT), 1.0)
    assert out is not None and out[:2] == (OUT_POD, "c")


def test_a_malformed_source_range_names_the_field() -> None:
    entry, backends = local_web([on("node-1", POD_C)])
    bad = replace(entry, source_ranges=("10.0.0.0/33",))
    try:
        ServiceTable(node_name="node-1").set_service(bad, backends)
    except ConfigError as exc:
        assert "spec.loadBalancerSourceRanges[0]" in exc.message
    else:
        raise AssertionError("a malformed range was accepted")


def test_tables_carry_source_ranges() -> None:
    svc = _svc("Cluster")
    svc.load_balancer_ips.append(LB_IP)
    svc.load_balancer_source_ranges.append("10.0.0.0/8")
    entry = t.service_entry(svc)
    assert entry.load_balancer_ips == (LB_IP,) and entry.source_ranges == ("10.0.0.0/8",)
