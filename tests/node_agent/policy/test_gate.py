"""NetworkPolicy in the router: packet vectors through two nodes' routers with the agent's
policy wiring (``agent_netpol.PolicySync``): allow, deny (a silent drop, ``policy_denied``),
replies, DNAT, the node's own traffic, DNS, ICMP, timeouts and bounds."""

from __future__ import annotations

from typing import Any

from knemu.node_agent.dataplane import tables as agent_tables
from knemu.node_agent.dataplane.router import OUT_HOST, OUT_POD, OUT_UNDERLAY
from knemu.node_agent.events import FlowDropped
from knemu.node_agent.kubeproxy.service_table import Backend
from knemu.node_agent.policy.gate import PolicyGate
from knemu.node_agent.policy.sync import PolicySync
from knemu.proto import knemu_pb2 as pb, wire

from .._cluster import POD_A, POD_B, POD_C, POD_D, VIP, Pair, pair, syn, tcp, web
from .._netpol import DENY_EGRESS, DENY_INGRESS, namespace, pod, policy

SYN_ACK = wire.TCP_SYN | wire.TCP_ACK
ACK = wire.TCP_ACK
HTTP = [{"name": "http", "containerPort": 8080}]


class Policed:
    """Two nodes' routers, each with the agent's policy wiring, fed the same objects."""

    def __init__(self, *policies: str) -> None:
        self.p: Pair = pair()
        self.r1, self.r2 = self.p.r1, self.p.r2
        self.s1 = PolicySync(self.r1, "node-1", "10.244.1.1")
        self.s2 = PolicySync(self.r2, "node-2", "10.244.2.1")
        self.add(
            namespace("default"),
            namespace("kube-system"),
            pod("a", POD_A, {"app": "client"}),
            pod("c", POD_C, {"app": "other"}),
            pod("b", POD_B, {"app": "web"}, node="node-2", ports=HTTP),
            pod("d", POD_D, {"app": "web"}, node="node-2", ports=HTTP),
            *(policy(text) for text in policies),
        )

    def add(self, *objects: Any, type_: str = "ADDED") -> None:
        kinds = {pb.Pod: "Pod", pb.Namespace: "Namespace", pb.NetworkPolicy: "NetworkPolicy"}
        for obj in objects:
            for sync in (self.s1, self.s2):
                sync.on_watch(type_, kinds[type(obj)], obj)

    def drops(self) -> list[FlowDropped]:
        return [e for e in self.p.events if isinstance(e, FlowDropped)]

    def a_to_b(self, packet: bytes, now: float = 1.0) -> Any:
        """From pod a (node-1) across the underlay; what node-2 does with it."""
        out = self.r1.handle_pod("a", packet, now)
        return self.p.underlay(out, now) if out is not None else "dropped on node-1"

    def b_to_a(self, packet: bytes, port: str = "b", now: float = 1.1) -> Any:
        out = self.r2.handle_pod(port, packet, now)
        return self.p.underlay(out, now) if out is not None else "dropped on node-2"


ALLOW_CLIENTS_8080 = """
metadata: {name: allow-clients}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: http}]
"""
ALLOW_DNS = """
metadata: {name: allow-dns}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}
      podSelector: {matchLabels: {k8s-app: kube-dns}}
    ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]
"""


def test_no_isolated_pod_no_gate() -> None:
    t = Policed(DENY_INGRESS.replace("{}", "{matchLabels: {app: nothing}}"))
    assert not t.s1.active and t.r1._policy is None and t.r2._policy is None
    out = t.a_to_b(syn(POD_A, POD_B, 1000, 80))
    assert out[:2] == (OUT_POD, "b")
    assert t.r1.table_snapshot()["counters"].get("drop_policy_denied") is None


def test_default_deny_ingress_drops_silently_on_the_destination_node() -> None:
    t = Policed(DENY_INGRESS)
    assert t.s2.active and t.r2._policy is t.s2.gate
    assert t.a_to_b(syn(POD_A, POD_B, 1000, 8080)) is None  # no RST: the client times out
    (drop,) = t.drops()
    assert (drop.node, drop.point, drop.reason) == ("node-2", "decap", "policy_denied")
    assert str(drop.flow) == f"TCP {POD_A}:1000 -> {POD_B}:8080"
    assert t.r2.statistics()["drop_policy_denied"] == 1
    assert t.r1.statistics()["encapsulated"] == 1  # egress was not isolated: it left node-1


def test_allowed_clients_connect_and_replies_pass_both_ways() -> None:
    t = Policed(DENY_INGRESS, ALLOW_CLIENTS_8080)
    assert t.a_to_b(syn(POD_A, POD_B, 1000, 8080))[:2] == (OUT_POD, "b")
    back = t.b_to_a(tcp(POD_B, POD_A, 8080, 1000, SYN_ACK))  # a is isolated too: a reply
    assert back[:2] == (OUT_POD, "a")
    for _ in range(3):
        assert t.a_to_b(tcp(POD_A, POD_B, 1000, 8080, ACK, b"data"))[:2] == (OUT_POD, "b")
        assert t.b_to_a(tcp(POD_B, POD_A, 8080, 1000, ACK, b"ok"))[:2] == (OUT_POD, "a")
    assert len(t.s2.gate) == 1 and len(t.s1.gate) == 1
    entry = t.s2.gate.entries()[0].to_dict()
    assert (entry["src"], entry["dport"], entry["state"]) == (POD_A, 8080, "ESTABLISHED")
    # Another pod, another port, and d itself (app=web, not a client) stay out.
    assert t.a_to_b(syn(POD_A, POD_B, 1001, 9090)) is None
    assert t.p.underlay(t.r1.handle_pod("c", syn(POD_C, POD_B, 1002, 8080), 1.0), 1.0) is None
    assert t.r2.handle_pod("d", syn(POD_D, POD_B, 1003, 8080), 1.0) is None
    assert t.r2.statistics()["drop_policy_denied"] == 3


def test_replies_pass_but_the_reverse_connection_is_judged() -> None:
    t = Policed(DENY_EGRESS.replace("{}", "{matchLabels: {app: web}}"))
    assert t.a_to_b(syn(POD_A, POD_B, 1000, 8080))[:2] == (OUT_POD, "b")
    assert t.b_to_a(tcp(POD_B, POD_A, 8080, 1000, SYN_ACK))[:2] == (OUT_POD, "a")
    assert t.b_to_a(syn(POD_B, POD_A, 2000, 22)) == "dropped on node-2"
    assert [d.point for d in t.drops()] == ["from-pod"]


def test_a_mid_stream_segment_passes_if_either_direction_would_be_allowed() -> None:
    t = Policed()
    t.a_to_b(syn(POD_A, POD_B, 1000, 8080))  # opened before any policy
    web_no_egress = DENY_EGRESS.replace("{}", "{matchLabels: {app: web}}")
    t.add(policy(ALLOW_CLIENTS_8080), policy(web_no_egress))
    # b may not open connections, but this is a's connection: the other way round is allowed.
    assert t.b_to_a(tcp(POD_B, POD_A, 8080, 1000, SYN_ACK))[:2] == (OUT_POD, "a")
    assert t.b_to_a(tcp(POD_B, POD_A, 8080, 1000, ACK, b"late"))[:2] == (OUT_POD, "a")
    # Neither way round: b may not open to a, and a may not open to b's port 9090.
    assert t.b_to_a(tcp(POD_B, POD_A, 9090, 3000, ACK)) == "dropped on node-2"


def test_egress_is_judged_on_the_sending_node_after_dnat() -> None:
    egress = """
metadata: {name: to-web}
spec:
  podSelector: {matchLabels: {app: client}}
  egress: [{to: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: %s}]}]
"""
    for port, allowed in (("8080", True), ("80", False), ("http", True)):
        t = Policed(egress % port)
        t.p.set_service(*web([Backend(POD_B, 8080, True), Backend(POD_D, 8080, True)]))
        out = t.r1.handle_pod("a", syn(POD_A, VIP, 40000, 80), 1.0)
        assert (out is not None) is allowed, port
        if not allowed:
            assert len(t.r1.conntrack) == 0, "the denied packet's NAT entry is not kept"
            assert [(d.node, d.point) for d in t.drops()] == [("node-1", "from-pod")]
        else:
            assert out[0] == OUT_UNDERLAY


def test_ingress_sees_the_backend_port_after_dnat() -> None:
    t = Policed(ALLOW_CLIENTS_8080.replace("port: http", "port: 80"))
    t.p.set_service(*web([Backend(POD_B, 8080, True)]))
    assert t.a_to_b(syn(POD_A, VIP, 40000, 80)) is None  # the service port is not the port
    t = Policed(ALLOW_CLIENTS_8080)
    t.p.set_service(*web([Backend(POD_B, 8080, True)]))
    assert t.a_to_b(syn(POD_A, VIP, 40000, 80))[:2] == (OUT_POD, "b")
    back = t.b_to_a(tcp(POD_B, POD_A, 8080, 40000, SYN_ACK))
    assert back[:2] == (OUT_POD, "a") and wire.decode_ipv4(bytes(back[2])).src == VIP


def test_the_node_itself_always_reaches_its_pods_and_gets_replies() -> None:
    t = Policed(DENY_INGRESS, DENY_EGRESS)
    out = t.r1.handle_host(syn("10.244.1.1", POD_A, 5000, 8080), 1.0)  # a kubelet probe
    assert out is not None and out[:2] == (OUT_POD, "a")
    back = t.r1.handle_pod("a", tcp(POD_A, "10.244.1.1", 8080, 5000, SYN_ACK), 1.0)
    assert back is not None and back[0] == OUT_HOST
    assert t.r1.handle_pod("a", syn(POD_A, "10.244.1.1", 6000, 22), 1.0) is None
    # node-1's host reaching node-2's pod is not node-2's own host: judged as an address.
    out = t.r1.handle_host(syn("10.244.1.1", POD_B, 5001, 8080), 1.0)
    assert t.p.underlay(out, 1.0) is None


def test_dns_for_egress_isolated_pods_needs_an_allow_dns_policy() -> None:
    for policies, allowed in (((DENY_EGRESS,), False), ((DENY_EGRESS, ALLOW_DNS), True)):
        t = Policed(*policies)
        entry, backends = agent_tables.dns_service("10.244.1.1")
        t.r1.set_service(entry.key, entry, backends)
        query = wire.udp_packet(POD_A, "10.96.0.10", 5555, 53, b"q")
        out = t.r1.handle_pod("a", query, 1.0)
        assert (out is not None and out[0] == OUT_HOST) is allowed
        if allowed:  # the forwarder's answer comes back un-NATed
            answer = t.r1.handle_host(wire.udp_packet("10.244.1.1", POD_A, 53, 5555, b"a"), 1.1)
            assert answer is not None and answer[:2] == (OUT_POD, "a")
            assert wire.decode_ipv4(bytes(answer[2])).src == "10.96.0.10"
            tcp_query = syn(POD_A, "10.96.0.10", 5556, 53)
            assert t.r1.handle_pod("a", tcp_query, 1.2) is not None


def _echo(src: str, dst: str, kind: int, ident: int = 7) -> bytes:
    msg = wire.IcmpMessage(kind, 0, ident.to_bytes(2, "big") + b"\0\1", b"ping")
    return wire.ip_packet(src, dst, wire.PROTO_ICMP, wire.encode_icmp(msg))


def test_icmp_echo_needs_a_rule_without_ports_and_errors_are_related() -> None:
    no_ports = ALLOW_CLIENTS_8080.replace("    ports: [{port: http}]\n", "")
    t = Policed(DENY_INGRESS, no_ports)
    assert t.a_to_b(_echo(POD_A, POD_B, wire.ICMP_ECHO_REQUEST))[:2] == (OUT_POD, "b")
    assert t.b_to_a(_echo(POD_B, POD_A, wire.ICMP_ECHO_REPLY))[:2] == (OUT_POD, "a")
    assert t.b_to_a(_echo(POD_B, POD_A, wire.ICMP_ECHO_REQUEST)) is None  # not a reply
    t = Policed(DENY_INGRESS, ALLOW_CLIENTS_8080)
    assert t.a_to_b(_echo(POD_A, POD_B, wire.ICMP_ECHO_REQUEST)) is None
    unreachable = wire.icmp_error_for(
        wire.udp_packet(POD_A, POD_B, 4000, 9, b"x"), wire.ICMP_DEST_UNREACH,
        wire.ICMP_PORT_UNREACH, POD_B,
    )  # fmt: skip
    assert unreachable is not None
    assert t.b_to_a(unreachable)[:2] == (OUT_POD, "a"), "an ICMP error is RELATED"


def test_udp_request_and_response_then_idle_timeout() -> None:
    t = Policed(DENY_INGRESS, ALLOW_CLIENTS_8080.replace("{port: http}", "{protocol: UDP}"))
    assert t.a_to_b(wire.udp_packet(POD_A, POD_B, 4000, 5353, b"q"))[:2] == (OUT_POD, "b")
    answer = wire.udp_packet(POD_B, POD_A, 5353, 4000, b"a")
    assert t.b_to_a(answer, now=2.0)[:2] == (OUT_POD, "a")
    t.r1.expire(100.0)  # 30 s idle (nf_conntrack_udp_timeout): both tables forget the flow
    t.r2.expire(100.0)
    assert len(t.s1.gate) == 0 and len(t.s2.gate) == 0
    assert t.b_to_a(answer, now=100.0) is None, "no longer a reply: a's ingress decides"


def test_the_connection_table_is_bounded() -> None:
    t = Policed(DENY_INGRESS, ALLOW_CLIENTS_8080)
    gate = PolicyGate(t.s2.engine, "10.244.2.1", max_connections=3)
    t.s2.gate = gate
    t.r2.set_policy_gate(gate)
    for sport in range(1000, 1010):
        assert t.a_to_b(syn(POD_A, POD_B, sport, 8080)) is not None
    assert len(gate) == 3 and gate.evicted == 7
    assert gate.snapshot()["allowed_connections"] == 3


def test_deleting_the_policies_takes_the_gate_away() -> None:
    t = Policed(DENY_INGRESS)
    assert t.a_to_b(syn(POD_A, POD_B, 1000, 8080)) is None
    t.add(policy(DENY_INGRESS), type_="DELETED")
    assert not t.s2.active and t.r2._policy is None and len(t.s2.gate) == 0
    assert t.a_to_b(syn(POD_A, POD_B, 1000, 8080))[:2] == (OUT_POD, "b")
    snap = t.s2.snapshot()
    assert snap["enforced"] and not snap["active"] and snap["isolated_pods"] == []


def test_a_later_fragment_follows_its_first() -> None:
    t = Policed(DENY_INGRESS)
    later = bytearray(wire.udp_packet(POD_A, POD_B, 4000, 53, b"x" * 16))
    later[6:8] = (0x0002).to_bytes(2, "big")  # fragment offset 16 bytes, no ports inside
    later[10:12] = b"\0\0"
    later[10:12] = wire.checksum(bytes(later[:20])).to_bytes(2, "big")
    assert t.a_to_b(bytes(later)) is not None


def test_table_snapshot_shows_policies_and_isolated_pods() -> None:
    t = Policed(DENY_INGRESS, ALLOW_CLIENTS_8080)
    t.a_to_b(syn(POD_A, POD_B, 1000, 8080))
    snap = t.s2.snapshot()
    assert [p["name"] for p in snap["policies"]] == [
        "default/allow-clients",
        "default/deny-ingress",
    ]
    pods = {p["pod"]: p for p in snap["isolated_pods"]}
    assert pods["default/b"]["ingress"] == ["default/allow-clients", "default/deny-ingress"]
    assert pods["default/b"]["ip"] == POD_B and pods["default/b"]["egress"] == []
    assert snap["allowed_connections"] == 1 and snap["connections"][0]["dport"] == 8080
