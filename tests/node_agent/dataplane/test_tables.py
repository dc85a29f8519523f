"""Watched objects -> service entries, backends, NodePort rules and peers (no sockets)."""

from __future__ import annotations

from knemu.node_agent.dataplane import tables as t
from knemu.node_agent.kubeproxy.relays import NodePortRule
from knemu.node_agent.kubeproxy.service_table import Backend
from knemu.proto import knemu_pb2 as pb


def svc(name: str = "web", **kw: object) -> pb.Service:
    s = pb.Service(metadata=pb.ObjectMeta(name=name, namespace="default"), type="ClusterIP",
                   cluster_ip="10.96.0.20")  # fmt: skip
    s.ports.add(name="http", protocol="TCP", port=8080, target_port="http")
    for k, v in kw.items():
        setattr(s, k, v)
    return s


def endpoint_slice(port: int, *eps: tuple[str, bool, bool]) -> pb.EndpointSlice:
    es = pb.EndpointSlice(metadata=pb.ObjectMeta(name="web-abc", namespace="default"),
                          service_name="web", address_type="IPv4")  # fmt: skip
    es.ports.add(name="http", protocol="TCP", port=port)
    for ip, ready, terminating in eps:
        es.endpoints.add(addresses=[ip], node_name="node-2",
                         conditions=pb.EndpointConditions(ready=ready, serving=ready or terminating,
                                                          terminating=terminating))  # fmt: skip
    return es


def test_vtep_mac_is_locally_administered_unicast_and_stable() -> None:
    mac = t.vtep_mac("node-1", "192.168.59.11")
    first = int(mac.split(":")[0], 16)
    assert first & 0x02 and not first & 0x01
    assert mac == t.vtep_mac("node-1", "192.168.59.11") != t.vtep_mac("node-2", "192.168.59.12")


def test_service_entry_with_affinity_default_timeout() -> None:
    entry = t.service_entry(svc(session_affinity="ClientIP"))
    assert entry.key == "default/web" and entry.cluster_ips == ("10.96.0.20",)
    assert entry.session_affinity_timeout_s == 10800
    assert entry.ports[0].name == "http" and entry.ports[0].port == 8080
    assert t.service_entry(svc()).session_affinity_timeout_s == 0


def test_named_ports_resolve_per_slice_and_readiness_is_kept() -> None:
    entry = t.service_entry(svc())
    slices = [
        endpoint_slice(80, ("10.244.1.5", True, False)),
        endpoint_slice(81, ("10.244.2.6", True, False), ("10.244.2.7", False, True)),
    ]
    backends = t.backends_of(entry, slices)
    assert backends["http"] == [
        Backend("10.244.1.5", 80, True, True, False, "node-2"),
        Backend("10.244.2.6", 81, True, True, False, "node-2"),
        Backend("10.244.2.7", 81, False, True, True, "node-2"),
    ]


def test_headless_and_external_name_are_not_proxied_and_dns_is_agent_owned() -> None:
    assert not t.is_proxied(svc(cluster_ip="None"))
    assert not t.is_proxied(svc(type="ExternalName", cluster_ip=""))
    assert t.is_proxied(svc())
    assert t.is_agent_owned(svc("kube-dns", cluster_ip="10.96.0.10"))
    entry, backends = t.dns_service("10.244.3.1")
    assert entry.cluster_ips == ("10.96.0.10",)
    assert {p.protocol for p in entry.ports} == {"TCP", "UDP"}
    assert backends["dns"] == [Backend("10.244.3.1", 53, True)]


def test_node_port_rules_only_for_node_port_services() -> None:
    np = svc("np", type="NodePort")
    np.ports[0].node_port = 30008
    udp = svc("dns", type="LoadBalancer", cluster_ip="10.96.0.30")
    udp.ports[0].protocol, udp.ports[0].node_port = "UDP", 31000
    assert t.node_port_rules([svc(), np, udp]) == [
        NodePortRule("TCP", 30008, "10.96.0.20", 8080),
        NodePortRule("UDP", 31000, "10.96.0.30", 8080),
    ]


def test_peers_skip_self_and_incomplete_nodes() -> None:
    node = pb.Node(metadata=pb.ObjectMeta(name="node-2"), internal_ip="192.168.59.12",
                   pod_cidr="10.244.2.0/24", vtep_mac="02:00:00:00:00:02", ready=True)  # fmt: skip
    peer = t.peer_of(node, "node-1")
    assert peer is not None and peer.vxlan_port == 4789 and peer.ready
    assert t.peer_of(node, "node-2") is None
    assert t.peer_of(pb.Node(metadata=pb.ObjectMeta(name="node-3")), "node-1") is None
