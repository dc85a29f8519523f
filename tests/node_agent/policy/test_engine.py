"""The NetworkPolicy engine over every rule kind the Kubernetes docs describe
(https://kubernetes.io/docs/concepts/services-networking/network-policies/), its incremental
updates (checked against a fresh build), and its compile time at 1000 pods / 100 policies."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from knemu.node_agent.policy.engine import PolicyEngine
from knemu.proto import knemu_pb2 as pb

from .._netpol import (
    DENY_EGRESS,
    DENY_INGRESS,
    GW,
    NODE,
    engine,
    feed,
    ip,
    namespace,
    pod,
    policy,
)

TCP, UDP, ICMP, SCTP = 6, 17, 1, 132
WEB, DB, PROD_WEB = "10.244.1.10", "10.244.1.20", "10.244.1.30"  # local (node-1)
CLIENT, PROD_CLIENT, DEV_OTHER = "10.244.2.10", "10.244.2.11", "10.244.2.12"  # node-2
OUTSIDE = "203.0.113.9"
CLIENTS = "{matchLabels: {role: client}}"
HTTP_PORTS = [{"name": "http", "containerPort": 8080}, {"name": "dns-udp", "containerPort":
              5353, "protocol": "UDP"}]  # fmt: skip


def cluster(*policies: str) -> PolicyEngine:
    return engine(
        namespace("default"),
        namespace("prod", {"team": "a", "env": "prod"}),
        namespace("dev", {"team": "b"}),
        pod("web-1", WEB, {"app": "web", "tier": "front"}, ports=HTTP_PORTS),
        pod("db-1", DB, {"app": "db"}),
        pod("web-prod", PROD_WEB, {"app": "web"}, namespace="prod"),
        pod("client", CLIENT, {"role": "client"}, node="node-2"),
        pod("client-prod", PROD_CLIENT, {"role": "client"}, namespace="prod", node="node-2"),
        pod("other-dev", DEV_OTHER, {"role": "other"}, namespace="dev", node="node-2"),
        *(policy(p) for p in policies),
    )


def ingress_ok(e: PolicyEngine, dst: str, src: str, port: int = 8080, proto: int = TCP) -> bool:
    return e.allows_ingress(ip(dst), ip(src), proto, port)


def egress_ok(e: PolicyEngine, src: str, dst: str, port: int = 8080, proto: int = TCP) -> bool:
    return e.allows_egress(ip(src), ip(dst), proto, port)


def allow_ingress(peers: str = "", ports: str = "", selector: str = "{}") -> str:
    rule = (
        "  - {}"
        if not (peers or ports)
        else "  - "
        + "\n    ".join(
            x for x in (f"from: {peers}" if peers else "", f"ports: {ports}" if ports else "") if x
        )
    )
    return f"metadata: {{name: allow}}\nspec:\n  podSelector: {selector}\n  ingress:\n{rule}\n"


def allow_egress(peers: str = "", ports: str = "", name: str = "allow-egress") -> str:
    rule = (
        "  - {}"
        if not (peers or ports)
        else "  - "
        + "\n    ".join(
            x for x in (f"to: {peers}" if peers else "", f"ports: {ports}" if ports else "") if x
        )
    )
    return (f"metadata: {{name: {name}}}\nspec:\n  podSelector: {{}}\n  policyTypes: [Egress]\n"
            f"  egress:\n{rule}\n")  # fmt: skip


# ---- isolation --------------------------------------------------------------------------------


def test_a_pod_no_policy_selects_is_not_isolated() -> None:
    e = cluster()
    assert e.tracked == set() and not e.ingress and not e.egress
    assert ingress_ok(e, WEB, OUTSIDE) and egress_ok(e, WEB, OUTSIDE)


def test_default_deny_ingress_isolates_its_namespace_only_and_one_direction() -> None:
    e = cluster(DENY_INGRESS)
    assert set(e.ingress) == {ip(WEB), ip(DB)} and not e.egress  # not prod's web
    assert not ingress_ok(e, WEB, CLIENT) and not ingress_ok(e, DB, DB)
    assert ingress_ok(e, PROD_WEB, CLIENT)
    assert egress_ok(e, WEB, CLIENT), "egress is not isolated by an Ingress-only policy"


@pytest.mark.parametrize(
    ("selector", "isolated"),
    [
        ("{}", {WEB, DB}),
        ("{matchLabels: {app: web}}", {WEB}),
        ("{matchLabels: {app: web, tier: back}}", set()),
        ("{matchExpressions: [{key: app, operator: In, values: [web, db]}]}", {WEB, DB}),
        ("{matchExpressions: [{key: app, operator: NotIn, values: [web]}]}", {DB}),
        ("{matchExpressions: [{key: tier, operator: NotIn, values: [back]}]}", {WEB, DB}),
        ("{matchExpressions: [{key: tier, operator: Exists}]}", {WEB}),
        ("{matchExpressions: [{key: tier, operator: DoesNotExist}]}", {DB}),
        ("{matchLabels: {app: web}, matchExpressions: [{key: tier, operator: Exists}]}", {WEB}),
        ("{matchExpressions: [{key: app, operator: Bogus}]}", set()),
    ],
)
def test_pod_selector_match_labels_and_expressions(selector: str, isolated: set[str]) -> None:
    e = cluster(DENY_INGRESS.replace("podSelector: {}", f"podSelector: {selector}"))
    assert set(e.ingress) == {ip(x) for x in isolated}
    assert e.tracked == {ip(x) for x in isolated}


@pytest.mark.parametrize(
    ("types", "egress_rules", "ingress_isolated", "egress_isolated"),
    [
        ("", "", True, False),  # default: Ingress
        ("", "  egress: [{}]\n", True, True),  # default: Ingress, plus Egress with egress rules
        ("  policyTypes: [Egress]\n", "", False, True),
        ("  policyTypes: [Ingress, Egress]\n", "", True, True),
    ],
)
def test_policy_types_default_and_explicit(
    types: str, egress_rules: str, ingress_isolated: bool, egress_isolated: bool
) -> None:
    e = cluster(f"metadata: {{name: p}}\nspec:\n  podSelector: {{}}\n{types}{egress_rules}")
    assert (ip(WEB) in e.ingress, ip(WEB) in e.egress) == (ingress_isolated, egress_isolated)


# ---- peers --------------------------------------------------------------------------------------


def test_empty_rule_list_denies_and_a_rule_without_peers_or_ports_allows_everything() -> None:
    e = cluster("metadata: {name: p}\nspec:\n  podSelector: {}\n  ingress: []\n")
    assert not ingress_ok(e, WEB, CLIENT) and not ingress_ok(e, WEB, OUTSIDE, proto=ICMP)
    e = cluster(allow_ingress())
    for proto, port in ((TCP, 1), (UDP, 53), (ICMP, 0), (SCTP, 0)):
        assert ingress_ok(e, WEB, OUTSIDE, port, proto)


def test_pod_selector_peer_is_scoped_to_the_policy_namespace() -> None:
    e = cluster(allow_ingress("[{podSelector: {matchLabels: {role: client}}}]"))
    assert ingress_ok(e, WEB, CLIENT)
    assert not ingress_ok(e, WEB, PROD_CLIENT), "same labels, other namespace"
    assert not ingress_ok(e, WEB, DEV_OTHER) and not ingress_ok(e, WEB, OUTSIDE)


def test_namespace_selector_alone_selects_every_pod_of_matching_namespaces() -> None:
    e = cluster(allow_ingress("[{namespaceSelector: {matchLabels: {team: a}}}]"))
    assert ingress_ok(e, WEB, PROD_CLIENT) and ingress_ok(e, WEB, PROD_WEB)
    assert not ingress_ok(e, WEB, CLIENT) and not ingress_ok(e, WEB, DEV_OTHER)
    e = cluster(allow_ingress("[{namespaceSelector: {}}]"))  # every namespace: every pod
    assert all(ingress_ok(e, WEB, x) for x in (CLIENT, PROD_CLIENT, DEV_OTHER, DB))
    assert not ingress_ok(e, WEB, OUTSIDE), "not an address outside every pod"


def test_the_namespace_name_label_is_always_there() -> None:
    e = cluster(allow_ingress(
        "[{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: dev}}}]"))  # fmt: skip
    assert ingress_ok(e, WEB, DEV_OTHER) and not ingress_ok(e, WEB, PROD_CLIENT)


def test_pod_and_namespace_selectors_in_one_peer_are_anded_in_two_peers_ored() -> None:
    team_a, clients = "namespaceSelector: {matchLabels: {team: a}}", "podSelector: " + CLIENTS
    e = cluster(allow_ingress(f"[{{{team_a}, {clients}}}]"))  # one peer
    assert ingress_ok(e, WEB, PROD_CLIENT)
    assert not ingress_ok(e, WEB, PROD_WEB) and not ingress_ok(e, WEB, CLIENT)
    e = cluster(allow_ingress(f"[{{{team_a}}}, {{{clients}}}]"))  # two peers
    assert ingress_ok(e, WEB, PROD_WEB) and ingress_ok(e, WEB, CLIENT)
    assert not ingress_ok(e, WEB, DEV_OTHER)


def test_ip_block_with_except() -> None:
    e = cluster(allow_ingress("[{ipBlock: {cidr: 10.244.0.0/16, except: [10.244.2.0/25]}}]"))
    assert ingress_ok(e, WEB, "10.244.2.200") and ingress_ok(e, WEB, DB)
    assert not ingress_ok(e, WEB, CLIENT), "10.244.2.10 is in the except range"
    assert not ingress_ok(e, WEB, OUTSIDE)
    e = cluster(allow_egress("[{ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}}]"))
    assert egress_ok(e, WEB, OUTSIDE) and not egress_ok(e, WEB, CLIENT)


def test_ipv6_and_host_bits_in_ip_blocks() -> None:
    e = cluster(allow_ingress("[{ipBlock: {cidr: 2001:db8::/32}}]"))
    assert not ingress_ok(e, WEB, OUTSIDE), "an IPv6 block matches no IPv4 source"
    e = cluster(allow_ingress("[{ipBlock: {cidr: 203.0.113.77/24}}]"))  # host bits: accepted
    assert ingress_ok(e, WEB, OUTSIDE)


def test_policies_are_additive() -> None:
    a = allow_ingress("[{podSelector: {matchLabels: {role: client}}}]")
    b = allow_ingress("[{ipBlock: {cidr: 203.0.113.0/24}}]").replace("name: allow", "name: b")
    e = cluster(DENY_INGRESS, a, b)
    assert ingress_ok(e, WEB, CLIENT) and ingress_ok(e, WEB, OUTSIDE)
    assert not ingress_ok(e, WEB, DEV_OTHER)


# ---- ports --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ports", "proto", "port", "allowed"),
    [
        ("[{port: 8080}]", TCP, 8080, True),  # protocol defaults to TCP
        ("[{port: 8080}]", UDP, 8080, False),
        ("[{port: 8080}]", TCP, 8081, False),
        ("[{port: 8080}]", ICMP, 0, False),  # ports name TCP/UDP/SCTP only
        ("[{protocol: UDP, port: 53}]", UDP, 53, True),
        ("[{protocol: UDP}]", UDP, 40000, True),  # no port: every port of the protocol
        ("[{protocol: UDP}]", TCP, 40000, False),
        ("[{port: 8000, endPort: 8100}]", TCP, 8100, True),
        ("[{port: 8000, endPort: 8100}]", TCP, 8101, False),
        ("[{port: 8000, endPort: 8100}]", TCP, 7999, False),
        ("[{port: http}]", TCP, 8080, True),  # named: web-1's container port "http"
        ("[{port: http}]", TCP, 80, False),
        ("[{port: dns-udp, protocol: UDP}]", UDP, 5353, True),
        ("[{port: dns-udp}]", TCP, 5353, False),  # the name is declared for UDP
        ("[{port: nope}]", TCP, 8080, False),
        ("[{protocol: SCTP, port: 9}]", SCTP, 9, True),
        ("[{port: 9}, {protocol: UDP, port: 9}]", UDP, 9, True),
    ],
)
def test_ingress_ports(ports: str, proto: int, port: int, allowed: bool) -> None:
    e = cluster(allow_ingress(ports=ports))
    assert ingress_ok(e, WEB, CLIENT, port, proto) is allowed


def test_named_egress_ports_resolve_against_each_destination_pod() -> None:
    e = cluster(DENY_EGRESS, allow_egress(ports="[{port: http}]"))
    feed(e, pod("api-2", "10.244.2.40", {"app": "api"}, node="node-2",
                ports=[{"name": "http", "containerPort": 9090}]))  # fmt: skip
    assert egress_ok(e, DB, "10.244.2.40", 9090) and not egress_ok(e, DB, "10.244.2.40", 8080)
    assert egress_ok(e, DB, WEB, 8080) and not egress_ok(e, DB, WEB, 9090)
    assert not egress_ok(e, DB, OUTSIDE, 9090), "no pod there: the name resolves to nothing"


# ---- egress and DNS -----------------------------------------------------------------------------

ALLOW_DNS = """[{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}},
      podSelector: {matchLabels: {k8s-app: kube-dns}}}]"""


def test_default_deny_egress() -> None:
    e = cluster(DENY_EGRESS)
    assert set(e.egress) == {ip(WEB), ip(DB)} and not e.ingress
    assert not egress_ok(e, WEB, CLIENT) and not egress_ok(e, WEB, GW, 53, UDP)
    assert ingress_ok(e, WEB, CLIENT)


@pytest.mark.parametrize(
    ("peers", "ports"),
    [
        (ALLOW_DNS, "[{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]"),
        (ALLOW_DNS, "[{protocol: UDP, port: dns}, {protocol: TCP, port: dns-tcp}]"),
        (ALLOW_DNS, ""),
        ("", "[{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]"),  # port 53 to anyone
        ("[{namespaceSelector: {}}]", ""),
        ("[{ipBlock: {cidr: 0.0.0.0/0}}]", "[{protocol: UDP, port: 53}, {port: 53}]"),
    ],
)
def test_the_usual_allow_dns_policies_reach_the_node_local_kube_dns(peers: str, ports: str) -> None:
    e = cluster(DENY_EGRESS, allow_egress(peers, ports))
    # kube-dns 10.96.0.10:53 is DNATed to the node's gateway: that is what egress sees.
    assert egress_ok(e, WEB, GW, 53, UDP) and egress_ok(e, WEB, GW, 53, TCP)


def test_the_gateway_is_kube_dns_only_on_port_53() -> None:
    e = cluster(DENY_EGRESS, allow_egress(ALLOW_DNS))
    assert egress_ok(e, WEB, GW, 53, UDP)
    assert not egress_ok(e, WEB, GW, 22), "other ports of the gateway are the node itself"
    assert not egress_ok(e, WEB, CLIENT, 53, UDP), "a pod that is not kube-dns"
    other_ns = ALLOW_DNS.replace("kube-system", "default")
    e = cluster(DENY_EGRESS, allow_egress(other_ns))
    assert not egress_ok(e, WEB, GW, 53, UDP)


def test_egress_to_a_pod_selector_and_an_address() -> None:
    e = cluster(allow_egress("[{podSelector: {matchLabels: {role: client}}}, "
                             "{ipBlock: {cidr: 203.0.113.0/28}}]"))  # fmt: skip
    assert egress_ok(e, WEB, CLIENT) and egress_ok(e, DB, OUTSIDE)
    assert not egress_ok(e, WEB, PROD_CLIENT) and not egress_ok(e, WEB, "203.0.113.99")


# ---- changes ------------------------------------------------------------------------------------


def test_relabelled_and_moved_pods_update_peers_and_isolation() -> None:
    e = cluster(DENY_INGRESS, allow_ingress("[{podSelector: {matchLabels: {role: client}}}]"))
    feed(e, pod("client", CLIENT, {"role": "gone"}, node="node-2"))
    assert not ingress_ok(e, WEB, CLIENT)
    feed(e, pod("client", "10.244.2.99", {"role": "client"}, node="node-2"))  # new IP
    assert ingress_ok(e, WEB, "10.244.2.99") and not ingress_ok(e, WEB, CLIENT)
    e.remove_pod("default/client")
    assert not ingress_ok(e, WEB, "10.244.2.99")
    e = cluster(DENY_INGRESS.replace("{}", "{matchLabels: {app: web}}"))
    feed(e, pod("web-1", WEB, {"app": "other"}))
    assert e.tracked == set()
    feed(e, pod("db-1", DB, {"app": "web"}))
    assert e.tracked == {ip(DB)}


def test_namespace_labels_changing_move_its_pods_in_and_out() -> None:
    e = cluster(allow_ingress("[{namespaceSelector: {matchLabels: {team: a}}}]"))
    feed(e, namespace("dev", {"team": "a"}))
    assert ingress_ok(e, WEB, DEV_OTHER)
    feed(e, namespace("prod", {}))
    assert not ingress_ok(e, WEB, PROD_CLIENT)
    e.remove_namespace("dev")
    assert not ingress_ok(e, WEB, DEV_OTHER)


def test_deleting_or_changing_a_policy_restores_traffic() -> None:
    e = cluster(DENY_INGRESS, DENY_EGRESS)
    e.remove_policy("default/deny-ingress")
    assert ingress_ok(e, WEB, CLIENT) and not egress_ok(e, WEB, CLIENT)
    e.remove_policy("default/deny-egress")
    assert e.tracked == set() and not e.ingress and not e.egress
    feed(e, policy(allow_ingress("[{podSelector: {}}, {namespaceSelector: {}}]")))
    assert e.snapshot()["peer_sets"] == 2
    e.remove_policy("default/allow")
    assert e.snapshot() == {"policies": [], "isolated_pods": [], "peer_sets": 0}
    feed(e, policy(DENY_INGRESS))
    feed(e, policy(DENY_INGRESS.replace("{}", "{matchLabels: {app: db}}")))  # modified
    assert set(e.ingress) == {ip(DB)}
    assert e.snapshot()["policies"][0]["local_pods"] == ["default/db-1"]


def test_a_local_pod_is_policed_from_the_runtime_ip_before_its_status_arrives() -> None:
    e = cluster(DENY_INGRESS)
    feed(e, pod("new", "", {"app": "new"}))  # scheduled here, no podIP reported yet
    assert e.tracked == {ip(WEB), ip(DB)}
    e.set_local_ip("default/new", "10.244.1.77")
    assert ip("10.244.1.77") in e.ingress
    e.set_local_ip("default/new", None)  # stopped, and the status never said otherwise
    assert ip("10.244.1.77") not in e.tracked


def test_finished_and_host_network_pods_take_no_part() -> None:
    e = cluster(DENY_INGRESS, allow_ingress("[{podSelector: {matchLabels: {role: client}}}]"))
    done = pod("client", CLIENT, {"role": "client"}, node="node-2")
    done.phase = "Succeeded"
    feed(e, done)
    assert not ingress_ok(e, WEB, CLIENT), "a finished pod's IP may belong to another pod"
    host = pod("web-1", "192.168.59.11", {"app": "web"})
    host.host_network = True
    feed(e, host)
    assert ip(WEB) not in e.tracked and ip("192.168.59.11") not in e.tracked


# ---- incremental == fresh -----------------------------------------------------------------------

_LABELS = st.dictionaries(st.sampled_from(["app", "role"]), st.sampled_from(["a", "b"]), max_size=2)
_POLICIES = [
    DENY_INGRESS,
    DENY_EGRESS,
    allow_ingress("[{podSelector: {matchLabels: {role: a}}}]", selector="{matchLabels: {app: a}}"),
    allow_ingress("[{namespaceSelector: {matchLabels: {team: x}}}]"),
    allow_ingress(
        "[{namespaceSelector: {matchLabels: {team: x}}, podSelector: "
        "{matchExpressions: [{key: role, operator: NotIn, values: [b]}]}}]"
    ),
    allow_egress("[{podSelector: {}}]", ports="[{port: 80}]"),
    allow_egress("[{namespaceSelector: {}}]", ports="[{port: web}]"),
]
_OPS = st.one_of(
    st.tuples(
        st.just("pod"),
        st.integers(0, 4),
        _LABELS,
        st.integers(0, 2),
        st.booleans(),
        st.sampled_from(["default", "x"]),
    ),
    st.tuples(st.just("rmpod"), st.integers(0, 4)),
    st.tuples(
        st.just("ns"), st.sampled_from(["default", "x"]), st.sampled_from([{}, {"team": "x"}])
    ),
    st.tuples(
        st.just("policy"),
        st.integers(0, len(_POLICIES) - 1),
        st.sampled_from(["p", "q"]),
        st.sampled_from(["default", "x"]),
    ),
    st.tuples(st.just("rmpolicy"), st.sampled_from(["default/p", "default/q", "x/p", "x/q"])),
)


def _policy_obj(index: int, name: str, ns: str) -> pb.NetworkPolicy:
    obj = policy(_POLICIES[index])
    obj.metadata.name, obj.metadata.namespace = name, ns
    return obj


def _verdicts(e: PolicyEngine) -> tuple[object, ...]:
    ips = [f"10.244.{n}.{10 + i}" for i in range(4) for n in (1, 2)] + [GW, OUTSIDE]
    return (
        frozenset(e.tracked),
        tuple(e.allows_ingress(ip(a), ip(b), TCP, port) for a in ips for b in ips
              for port in (80, 8080)),
        tuple(e.allows_egress(ip(a), ip(b), proto, port) for a in ips for b in ips
              for proto, port in ((TCP, 80), (TCP, 8080), (UDP, 53))),
    )  # fmt: skip


class _World:
    """The objects an api-server would hold after the same operations, to build afresh."""

    def __init__(self, live: PolicyEngine) -> None:
        self.live = live
        self.pods: dict[int, pb.Pod] = {}
        self.namespaces: dict[str, pb.Namespace] = {}
        self.policies: dict[str, pb.NetworkPolicy] = {}

    def apply(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "pod":
            _, i, labels, host, local, ns = op
            obj = pod(f"p{i}", f"10.244.{1 if local else 2}.{10 + host}", labels, namespace=ns,
                      node=NODE if local else "node-2",
                      ports=[{"name": "web", "containerPort": 8080}])  # fmt: skip
            old = self.pods.get(i)
            if old is not None and old.metadata.namespace != ns:  # another object, then
                self.live.remove_pod(f"{old.metadata.namespace}/p{i}")
            self.pods[i] = obj
            self.live.set_pod(obj)
        elif kind == "rmpod" and op[1] in self.pods:
            old = self.pods.pop(op[1])
            self.live.remove_pod(f"{old.metadata.namespace}/{old.metadata.name}")
        elif kind == "ns":
            self.namespaces[op[1]] = namespace(op[1], op[2])
            self.live.set_namespace(self.namespaces[op[1]])
        elif kind == "policy":
            obj = _policy_obj(op[1], op[2], op[3])
            self.policies[f"{op[3]}/{op[2]}"] = obj
            self.live.set_policy(obj)
        elif kind == "rmpolicy":
            self.policies.pop(op[1], None)
            self.live.remove_policy(op[1])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_OPS, max_size=30))
def test_incremental_updates_equal_a_fresh_build(ops: list[tuple[Any, ...]]) -> None:
    world = _World(PolicyEngine(NODE, dns_ip=GW))
    for op in ops:
        world.apply(op)
    fresh = PolicyEngine(NODE, dns_ip=GW)
    feed(fresh, *world.namespaces.values(), *world.policies.values(), *world.pods.values())
    assert _verdicts(world.live) == _verdicts(fresh)


# ---- scale --------------------------------------------------------------------------------------


def _scale_objects() -> tuple[list[object], list[object], list[object]]:
    namespaces = [namespace(f"ns-{n}", {"team": f"t{n % 3}"}) for n in range(10)]
    pods = [
        pod(f"pod-{i}", f"10.244.{i % 3 + 1}.{i // 3 + 2}", {"app": f"app-{i % 20}",
            "role": ("client", "server", "db")[i % 3]}, namespace=f"ns-{i % 10}",
            node=f"node-{i % 3 + 1}", ports=[{"name": "http", "containerPort": 8080}])
        for i in range(1000)
    ]  # fmt: skip
    policies = []
    for j in range(100):
        text = f"""
metadata: {{name: pol-{j}, namespace: ns-{j % 10}}}
spec:
  podSelector: {{matchLabels: {{app: app-{j % 20}}}}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {{matchLabels: {{role: client}}}}
    - namespaceSelector: {{matchLabels: {{team: t{j % 3}}}}}
      podSelector: {{matchExpressions: [{{key: app, operator: In, values: [app-{j % 7}]}}]}}
    ports: [{{port: http}}, {{port: 9000, endPort: 9100}}]
  egress:
  - to: [{{ipBlock: {{cidr: 10.0.0.0/8, except: [10.244.{j % 3 + 1}.0/24]}}}}]
  - to: [{{namespaceSelector: {{}}, podSelector: {{matchLabels: {{role: db}}}}}}]
"""
        policies.append(policy(text))
    return namespaces, pods, policies


def test_1000_pods_and_100_policies_compile_to_the_same_tables_in_either_order() -> None:
    # How long this takes is bench/bench_router.py's business (tests check behaviour): here the
    # engine must reach the same state whichever arrives first, pods or policies.
    namespaces, pods, policies = _scale_objects()
    engines = []
    for first, second in ((pods, policies), (policies, pods)):
        e = PolicyEngine(NODE, dns_ip=GW)
        feed(e, *namespaces, *first, *second)
        engines.append(e)
    a, b = engines
    assert len(a.tracked) > 100
    assert a.tracked == b.tracked
    assert a.snapshot() == b.snapshot()
