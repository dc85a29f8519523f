"""internalTrafficPolicy: Local (KEP-2086) in the service table and the router.

https://kubernetes.io/docs/concepts/services-networking/service-traffic-policy/: ClusterIP
traffic from a node goes only to that node's endpoints; with endpoints elsewhere but none here
kube-proxy drops it (the client times out), with none at all it rejects as usual.  NodePort
and external IPs are external traffic and keep every endpoint.
"""

from __future__ import annotations

import collections
import json
from dataclasses import replace

from knemu.node_agent.dataplane import tables as t
from knemu.node_agent.dataplane.router import OUT_HOST, OUT_POD, OUT_UNDERLAY, Router
from knemu.node_agent.events import FlowDropped, FlowRefused
from knemu.node_agent.kubeproxy.service_table import (
    Backend,
    ServiceEntry,
    ServicePortEntry,
    ServiceTable,
)
from knemu.proto import knemu_pb2 as pb, wire

from .._cluster import POD_A, POD_B, POD_C, POD_D, UNDERLAY1, VIP, node, pair, syn, valid, web

GW_1 = "10.244.1.1"
EXTERNAL_IP = "192.0.2.50"
NODE_PORT = 30080


def local_web(
    backends: list[Backend], affinity_s: float = 0.0, protocol: str = "TCP"
) -> tuple[ServiceEntry, dict[str, list[Backend]]]:
    entry, by_port = web(backends, protocol=protocol, affinity_s=affinity_s)
    entry = replace(
        entry,
        internal_local=True,
        external_ips=(EXTERNAL_IP,),
        ports=(replace(entry.ports[0], node_port=NODE_PORT),),
    )
    return entry, by_port


def on(node_name: str, ip: str, ready: bool = True, **kw: bool) -> Backend:
    return Backend(ip, 8080, ready, node_name=node_name, **kw)


LOCAL_C = on("node-1", POD_C)
REMOTE_B = on("node-2", POD_B)
REMOTE_D = on("node-2", POD_D)


def test_only_local_endpoints_for_cluster_ip_traffic() -> None:
    p = pair()
    p.set_service(*local_web([LOCAL_C, REMOTE_B, REMOTE_D]))
    for sport in range(40000, 40030):
        out = p.r1.handle_pod("a", syn(POD_A, VIP, sport, 80), 1.0)
        assert out is not None and out[:2] == (OUT_POD, "c")
    # node-2's clients get node-2's endpoints only.
    seen = set()
    for sport in range(40000, 40030):
        out = p.r2.handle_pod("b", syn(POD_B, VIP, sport, 80), 1.0)
        assert out is not None
        seen.add(out[1])
    assert seen <= {"b", "d"} and len(seen) == 2


def test_the_node_itself_is_internal_too() -> None:
    p = pair()
    p.set_service(*local_web([LOCAL_C, REMOTE_B]))
    out = p.r1.handle_host(syn(GW_1, VIP, 41000, 80), 1.0)
    assert out is not None and out[:2] == (OUT_POD, "c")


def test_remote_only_is_dropped_with_reason_and_event() -> None:
    p = pair()
    p.set_service(*local_web([REMOTE_B, REMOTE_D]))
    assert p.r1.handle_pod("a", syn(POD_A, VIP, 40000, 80), 1.0) is None
    udp = wire.udp_packet(POD_A, VIP, 5000, 80, b"hello")
    p.r1.set_service("default/web", *local_web([REMOTE_B], protocol="UDP"))
    assert p.r1.handle_pod("a", udp, 1.0) is None
    stats = p.r1.statistics()
    assert stats["drop_no_local_endpoints"] == 2 and stats["refused"] == 0
    assert len(p.r1.conntrack) == 0
    drops = [e for e in p.events if isinstance(e, FlowDropped)]
    assert [e.reason for e in drops] == ["no_local_endpoints"] * 2
    assert drops[0].flow is not None and drops[0].flow.dst_ip == VIP
    assert not [e for e in p.events if isinstance(e, FlowRefused)]


def test_no_endpoints_anywhere_is_refused_as_without_the_policy() -> None:
    p = pair()
    p.set_service(*local_web([on("node-2", POD_B, ready=False)]))
    out = p.r1.handle_pod("a", syn(POD_A, VIP, 40000, 80), 1.0)
    assert out is not None and out[:2] == (OUT_POD, "a")
    assert wire.decode_tcp(valid(out[2]).payload).flags & wire.TCP_RST
    stats = p.r1.statistics()
    assert stats["refused_no_endpoints"] == 1 and "drop_no_local_endpoints" not in stats


def test_terminating_fallback_applies_among_local_endpoints() -> None:
    p = pair()
    # Local: only a serving, terminating endpoint; remote: a ready one.  kube-proxy uses the
    # local serving-terminating endpoint rather than leaving the node (KEP-1669 with KEP-2086).
    draining = on("node-1", POD_C, ready=False, serving=True, terminating=True)
    p.set_service(*local_web([draining, REMOTE_B]))
    out = p.r1.handle_pod("a", syn(POD_A, VIP, 40000, 80), 1.0)
    assert out is not None and out[:2] == (OUT_POD, "c")
    # A local endpoint that is neither ready nor serving does not count: dropped.
    p.set_service(*local_web([on("node-1", POD_C, ready=False, serving=False), REMOTE_B]))
    assert p.r1.handle_pod("a", syn(POD_A, VIP, 40001, 80), 1.0) is None
    assert p.r1.statistics()["drop_no_local_endpoints"] == 1


def test_affinity_and_proxy_modes_choose_among_local_endpoints() -> None:
    local_a = on("node-1", POD_A)
    for mode, scheduler in (
        ("iptables", "rr"),
        ("ipvs", "rr"),
        ("ipvs", "sh"),
        ("userspace", "rr"),
    ):
        r = Router(node(1), proxy_mode=mode, ipvs_scheduler=scheduler, seed=3)
        r.set_peer("node-2", "10.244.2.0/24", "192.168.59.12", "02:00:00:00:00:02")
        r.add_local_pod(POD_A, "a")
        r.add_local_pod(POD_C, "c")
        r.set_service("default/web", *local_web([local_a, LOCAL_C, REMOTE_B, REMOTE_D]))
        seen: collections.Counter[str] = collections.Counter()
        for sport in range(20):
            out = r.handle_pod("a", syn(POD_A, VIP, 40000 + sport, 80), 1.0)
            assert out is not None and out[0] is OUT_POD, (mode, scheduler)
            seen[out[1]] += 1
        assert set(seen) <= {"a", "c"}, (mode, scheduler)
        if scheduler != "sh":
            assert set(seen) == {"a", "c"}, (mode, scheduler)
    # ClientIP affinity pins a client to one local endpoint.
    p = pair()
    p.set_service(*local_web([local_a, LOCAL_C, REMOTE_B, REMOTE_D], affinity_s=60.0))
    first = p.r1.handle_pod("a", syn(POD_A, VIP, 40000, 80), 1.0)
    assert first is not None and first[0] is OUT_POD
    for sport in range(40001, 40020):
        out = p.r1.handle_pod("a", syn(POD_A, VIP, sport, 80), 2.0)
        assert out is not None and out[:2] == first[:2]


def test_userspace_retry_stays_local() -> None:
    r = Router(node(1), proxy_mode="userspace")
    r.set_service("default/web", *local_web([on("node-1", POD_A), LOCAL_C, REMOTE_B]))
    assert r.next_backend("default/web:http", POD_A, 8080, POD_A, 1.0) == (POD_C, 8080)
    assert r.next_backend("default/web:http", POD_C, 8080, POD_A, 1.0) == (POD_A, 8080)
    # The NodePort relay (from the node IP) may retry anywhere.
    retried = {r.next_backend("default/web:http", POD_A, 8080, UNDERLAY1, 1.0) for _ in range(4)}
    assert (POD_B, 8080) in retried


def test_node_port_and_external_ips_use_every_endpoint() -> None:
    p = pair()
    p.set_service(*local_web([LOCAL_C, REMOTE_B, REMOTE_D]))
    kinds = set()
    # A pod reaching the node port or an external IP, and the NodePort relay (from the node
    # IP) reaching the ClusterIP: external traffic, so remote endpoints are used too.
    for sport in range(40000, 40040):
        for dst, dport in ((UNDERLAY1, NODE_PORT), (EXTERNAL_IP, 80)):
            out = p.r1.handle_pod("a", syn(POD_A, dst, sport, dport), 1.0)
            assert out is not None
            kinds.add(out[0])
        out = p.r1.handle_host(syn(UNDERLAY1, VIP, sport, 80), 1.0)
        assert out is not None
        kinds.add(out[0])
    assert kinds == {OUT_POD, OUT_UNDERLAY}
    # With only remote endpoints the relay still gets one while pods are dropped.
    p.set_service(*local_web([REMOTE_B]))
    out = p.r1.handle_host(syn(UNDERLAY1, VIP, 41000, 80), 1.0)
    assert out is not None and out[0] is OUT_UNDERLAY
    assert valid(bytes(out[2])[22:]).src == GW_1  # masqueraded, as any node-IP client
    assert p.r1.handle_host(syn(GW_1, VIP, 41001, 80), 1.0) is None
    assert p.r1.statistics()["drop_no_local_endpoints"] == 1
    assert OUT_HOST not in kinds


def test_policy_change_flushes_only_what_left_and_keeps_state() -> None:
    table = ServiceTable("ipvs", "rr", node_name="node-1")
    entry, backends = local_web([on("node-1", POD_A), LOCAL_C, REMOTE_B])
    assert table.set_service(entry, backends) == (set(), set())
    cp = table.rules[6][wire.ip_to_bytes(VIP) + (80).to_bytes(2, "big")]
    assert [cb.backend.ip for cb in cp.usable] == [POD_A, POD_C]
    assert cp.external is not None and len(cp.external.usable) == 3 and not cp.no_local
    table.pick(cp, b"\x0a\xf4\x01\x05", 1.0)
    # Back to Cluster: nothing left the service, nothing became unusable.
    assert table.set_service(replace(entry, internal_local=False), backends) == (set(), set())
    cp2 = table.rules[6][wire.ip_to_bytes(VIP) + (80).to_bytes(2, "big")]
    assert cp2.external is None and cp2.rr_next == 1
    # The remote backend leaves: reported gone whatever the policy.
    gone, _ = table.set_service(entry, {"http": backends["http"][:2]})
    assert {cb[1:5] for cb in gone} == {wire.ip_to_bytes(POD_B)}
    table.remove_service(entry.key)
    assert not table.vips and not table.rules[6]


def test_without_a_node_name_nothing_is_local() -> None:
    table = ServiceTable()
    entry, backends = local_web([Backend(POD_B, 8080, True)])  # no node_name either
    table.set_service(entry, backends)
    cp = table.rules[6][wire.ip_to_bytes(VIP) + (80).to_bytes(2, "big")]
    assert not cp.usable and cp.no_local


def test_table_snapshot_shows_policy_and_local_backends() -> None:
    p = pair()
    p.set_service(*local_web([LOCAL_C, REMOTE_B]))
    p.r1.set_service("default/plain", *_plain())
    snap = json.loads(json.dumps(p.r1.table_snapshot()))
    svc = {s["key"]: s for s in snap["services"]}
    web_svc, plain = svc["default/web"], svc["default/plain"]
    assert web_svc["internal_traffic_policy"] == "Local"
    assert plain["internal_traffic_policy"] == "Cluster"
    port = web_svc["ports"][0]
    assert not port["no_local_endpoints"]
    rows = {b["ip"]: (b["local"], b["usable"], b["usable_internal"]) for b in port["backends"]}
    assert rows == {POD_C: (True, True, True), POD_B: (False, True, False)}
    plain_rows = {b["ip"]: b["usable_internal"] for b in plain["ports"][0]["backends"]}
    assert plain_rows == {POD_B: True}
    p.r1.set_service("default/web", *local_web([REMOTE_B]))
    snap = p.r1.table_snapshot()
    assert snap["services"][1]["ports"][0]["no_local_endpoints"] is True


def _plain() -> tuple[ServiceEntry, dict[str, list[Backend]]]:
    entry = ServiceEntry("default/plain", ("10.96.0.21",), (ServicePortEntry("http", "TCP", 80),))
    return entry, {"http": [REMOTE_B]}


# -- agent_tables: Service object -> entry -------------------------------------------------------


def _svc(policy: str) -> pb.Service:
    s = pb.Service(metadata=pb.ObjectMeta(name="web", namespace="default"), type="NodePort",
                   cluster_ip="10.96.0.20", internal_traffic_policy=policy)  # fmt: skip
    s.ports.add(name="http", protocol="TCP", port=80, target_port="8080", node_port=NODE_PORT)
    return s


def test_service_entry_reads_internal_traffic_policy() -> None:
    assert t.service_entry(_svc("Local")).internal_local is True
    assert t.service_entry(_svc("Cluster")).internal_local is False
    assert t.service_entry(_svc("")).internal_local is False  # unset defaults to Cluster


def test_backends_of_keep_node_names_for_the_local_filter() -> None:
    entry = t.service_entry(_svc("Local"))
    es = pb.EndpointSlice(metadata=pb.ObjectMeta(name="web-a", namespace="default"),
                          service_name="web", address_type="IPv4")  # fmt: skip
    es.ports.add(name="http", protocol="TCP", port=8080)
    for ip, node_name in ((POD_C, "node-1"), (POD_B, "node-2")):
        es.endpoints.add(addresses=[ip], node_name=node_name,
                         conditions=pb.EndpointConditions(ready=True, serving=True))  # fmt: skip
    backends = t.backends_of(entry, [es])
    assert {(b.ip, b.node_name) for b in backends["http"]} == {
        (POD_C, "node-1"),
        (POD_B, "node-2"),
    }
    table = ServiceTable(node_name="node-1")
    table.set_service(entry, backends)
    cp = table.ports["default/web"][0]
    assert [cb.backend.ip for cb in cp.usable] == [POD_C]
