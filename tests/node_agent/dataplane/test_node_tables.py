"""NodeTables: watch events in, router peers and service rules out (no sockets, no namespaces)."""

from __future__ import annotations

from typing import Any

from knemu.node_agent.dataplane.router import LocalNode, Router
from knemu.node_agent.dataplane.tables import NodeTables
from knemu.node_agent.kubeproxy.service_table import Backend, ServiceEntry
from knemu.proto import knemu_pb2 as pb


class Cache:
    """The informer's cache as NodeTables reads it: Services by namespace and name."""

    def __init__(self) -> None:
        self.services: dict[tuple[str, str], pb.Service] = {}

    def get(self, kind: str, namespace: str, name: str) -> Any | None:
        assert kind == "Service"
        return self.services.get((namespace, name))

    def put(self, svc: pb.Service) -> pb.Service:
        self.services[(svc.metadata.namespace, svc.metadata.name)] = svc
        return svc


class Recorder:
    """The router as NodeTables drives it, recording the calls."""

    def __init__(self) -> None:
        self.peers: dict[str, tuple[str, str, str, int, bool]] = {}
        self.keys: dict[str, str] = {}  # WireGuard public keys the peers published
        self.services: dict[str, tuple[ServiceEntry, dict[str, list[Backend]]]] = {}

    def set_peer(self, name: str, pod_cidr: str, underlay_ip: str, vtep_mac: str,
                 vxlan_port: int = 4789, ready: bool = True,
                 public_key: str = "") -> None:  # fmt: skip
        self.peers[name] = (pod_cidr, underlay_ip, vtep_mac, vxlan_port, ready)
        self.keys[name] = public_key

    def remove_peer(self, name: str) -> None:
        self.peers.pop(name, None)

    def set_service(
        self, key: str, entry: ServiceEntry, backends: dict[str, list[Backend]]
    ) -> None:
        self.services[key] = (entry, backends)

    def remove_service(self, key: str) -> None:
        self.services.pop(key, None)


def node(name: str, n: int, **kw: Any) -> pb.Node:
    return pb.Node(metadata=pb.ObjectMeta(name=name), pod_cidr=f"10.244.{n}.0/24",
                   internal_ip=f"192.168.59.{10 + n}", vtep_mac=f"02:00:00:00:00:0{n}",
                   ready=True, **kw)  # fmt: skip


def service(name: str = "web", cluster_ip: str = "10.96.0.20", **kw: Any) -> pb.Service:
    s = pb.Service(metadata=pb.ObjectMeta(name=name, namespace="default"), type="ClusterIP",
                   cluster_ip=cluster_ip, **kw)  # fmt: skip
    s.ports.add(name="http", protocol="TCP", port=80)
    return s


def endpoint_slice(name: str, service_name: str, *ips: str) -> pb.EndpointSlice:
    es = pb.EndpointSlice(metadata=pb.ObjectMeta(name=name, namespace="default"),
                          service_name=service_name, address_type="IPv4")  # fmt: skip
    es.ports.add(name="http", protocol="TCP", port=8080)
    for ip in ips:
        es.endpoints.add(addresses=[ip], node_name="node-2",
                         conditions=pb.EndpointConditions(ready=True, serving=True))  # fmt: skip
    return es


def backends(rec: Recorder, key: str = "default/web") -> set[str]:
    return {b.ip for b in rec.services[key][1]["http"]}


def make() -> tuple[NodeTables, Recorder, Cache]:
    rec, cache = Recorder(), Cache()
    return NodeTables("node-1", rec, cache), rec, cache


def test_peer_nodes_become_routes_and_this_node_never_does() -> None:
    tables, rec, _ = make()
    assert tables.apply("ADDED", "Node", node("node-1", 1), None) is False
    assert rec.peers == {}
    tables.apply("ADDED", "Node", node("node-2", 2, vxlan_port=4790), None)
    assert rec.peers == {
        "node-2": ("10.244.2.0/24", "192.168.59.12", "02:00:00:00:00:02", 4790, True)
    }
    assert tables.peer_name("192.168.59.12") == "node-2"
    assert tables.peer_name("192.168.59.99") == "192.168.59.99"
    tables.apply("DELETED", "Node", node("node-2", 2), None)
    assert rec.peers == {} and tables.peer_name("192.168.59.12") == "192.168.59.12"


def test_a_peers_wireguard_key_comes_from_calicos_annotation() -> None:
    tables, rec, _ = make()
    tables.apply("ADDED", "Node", node("node-2", 2), None)
    assert rec.keys == {"node-2": ""}
    annotations = {"projectcalico.org/WireguardPublicKey": "k" * 43 + "="}
    keyed = node("node-2", 2)
    keyed.metadata.annotations.update(annotations)
    tables.apply("MODIFIED", "Node", keyed, None)
    assert rec.keys == {"node-2": "k" * 43 + "="}


def test_an_incomplete_node_removes_its_route() -> None:
    tables, rec, _ = make()
    tables.apply("ADDED", "Node", node("node-2", 2), None)
    tables.apply("MODIFIED", "Node", pb.Node(metadata=pb.ObjectMeta(name="node-2")), None)
    assert rec.peers == {}


def test_slices_of_a_service_are_merged_and_follow_changes() -> None:
    tables, rec, cache = make()
    svc = cache.put(service())
    assert tables.apply("ADDED", "Service", svc, None) is True
    assert backends(rec) == set()
    a = endpoint_slice("web-a", "web", "10.244.2.5")
    b = endpoint_slice("web-b", "web", "10.244.3.5")
    assert tables.apply("ADDED", "EndpointSlice", a, None) is True
    tables.apply("ADDED", "EndpointSlice", b, None)
    assert backends(rec) == {"10.244.2.5", "10.244.3.5"}
    tables.apply("DELETED", "EndpointSlice", a, None)
    assert backends(rec) == {"10.244.3.5"}
    assert [s.metadata.name for s in tables.slices_of("default", "web")] == ["web-b"]


def test_a_slice_moving_to_another_service_updates_both() -> None:
    tables, rec, cache = make()
    for name, ip in (("web", "10.96.0.20"), ("api", "10.96.0.21")):
        tables.apply("ADDED", "Service", cache.put(service(name, ip)), None)
    old = endpoint_slice("s", "web", "10.244.2.5")
    tables.apply("ADDED", "EndpointSlice", old, None)
    new = endpoint_slice("s", "api", "10.244.2.5")
    tables.apply("MODIFIED", "EndpointSlice", new, old)
    assert backends(rec, "default/web") == set()
    assert backends(rec, "default/api") == {"10.244.2.5"}
    assert tables.slices_of("default", "web") == []


def test_headless_deleted_and_kube_dns_services_get_no_rules() -> None:
    tables, rec, cache = make()
    tables.apply("ADDED", "Service", cache.put(service()), None)
    assert "default/web" in rec.services
    headless = cache.put(service(cluster_ip="None"))
    tables.apply("MODIFIED", "Service", headless, None)
    assert "default/web" not in rec.services
    tables.apply("ADDED", "Service", cache.put(service()), None)
    del cache.services[("default", "web")]
    tables.apply("DELETED", "Service", service(), None)
    assert rec.services == {}
    dns = cache.put(service("kube-dns", "10.96.0.10"))
    tables.apply("ADDED", "Service", dns, None)
    assert rec.services == {}, "kube-dns stays the node-local forwarder"


def test_a_service_the_router_refuses_is_left_out_not_raised() -> None:
    node1 = LocalNode("node-1", "192.168.59.11", "02:00:00:00:00:01", "10.244.1.0/24", "10.244.1.1")
    router, cache = Router(node1, seed=1), Cache()
    tables = NodeTables("node-1", router, cache)
    bad = cache.put(service(cluster_ip="10.96.0.300"))
    tables.apply("ADDED", "Service", bad, None)
    assert router.table_snapshot()["services"] == []
    tables.apply("ADDED", "Node", node("node-2", 2), None)
    tables.apply("ADDED", "Service", cache.put(service()), None)
    tables.apply("ADDED", "EndpointSlice", endpoint_slice("w", "web", "10.244.2.5"), None)
    snap = router.table_snapshot()
    assert [p["name"] for p in snap["peers"]] == ["node-2"]
    assert [s["key"] for s in snap["services"]] == ["default/web"]


def test_other_kinds_are_ignored() -> None:
    tables, rec, _ = make()
    pod = pb.Pod(metadata=pb.ObjectMeta(name="p", namespace="default"))
    assert tables.apply("ADDED", "Pod", pod, None) is False
    assert rec.peers == {} and rec.services == {}


def test_a_peer_with_another_backend_gets_no_route_and_is_reported_once() -> None:
    router, seen = Recorder(), []
    tables = NodeTables("node-1", router, Cache(), "ipip", lambda n, b: seen.append((n, b)))
    vxlan_peer = node("node-2", 2)  # no backend-type annotation: vxlan
    tables.apply("ADDED", "Node", vxlan_peer, None)
    tables.apply("MODIFIED", "Node", vxlan_peer, vxlan_peer)
    assert router.peers == {} and seen == [("node-2", "vxlan")]
    assert tables.mismatched == {"node-2": "vxlan"}
    ipip_peer = node("node-2", 2)
    ipip_peer.metadata.annotations["flannel.alpha.coreos.com/backend-type"] = "ipip"
    tables.apply("MODIFIED", "Node", ipip_peer, vxlan_peer)
    assert "node-2" in router.peers and tables.mismatched == {}
