"""The hostPort table (portmap core): defaults, the NodePorts clash rule, admission, relays."""

from __future__ import annotations

from hypothesis import given, strategies as st

from knemu.node_agent.cni.portmap import (
    ALL_ADDRESSES,
    Clash,
    HostPort,
    PortMapping,
    PortMapTable,
    requested,
)
from knemu.node_agent.kubeproxy.relays import Relay
from knemu.proto import knemu_pb2 as pb

NODE_IP = "192.168.59.12"


def pod(name: str, *ports: pb.ContainerPort, containers: int = 1) -> pb.Pod:
    meta = pb.ObjectMeta(name=name, namespace="default", uid=f"uid-{name}")
    spec = [pb.Container(name=f"c{i}", image="nginx", ports=ports) for i in range(containers)]
    return pb.Pod(metadata=meta, node_name="node-2", containers=spec)


def tcp(host_port: int, container_port: int = 80, host_ip: str = "") -> PortMapping:
    return PortMapping(HostPort("TCP", host_ip or ALL_ADDRESSES, host_port), container_port)


def test_requested_applies_the_api_defaults_and_skips_ports_without_host_port() -> None:
    p = pod(
        "web",
        pb.ContainerPort(container_port=80, host_port=8088),
        pb.ContainerPort(container_port=53, host_port=5353, protocol="UDP", host_ip="127.0.0.1"),
        pb.ContainerPort(container_port=9090),  # reached at the pod IP only
        pb.ContainerPort(host_port=7000),  # containerPort defaults to hostPort
    )
    assert requested(p) == (
        tcp(8088),
        PortMapping(HostPort("UDP", "127.0.0.1", 5353), 53),
        tcp(7000, 7000),
    )


def test_the_same_port_in_two_containers_is_requested_once() -> None:
    p = pod("twice", pb.ContainerPort(container_port=80, host_port=8088), containers=2)
    assert requested(p) == (tcp(8088),)


def test_clash_rule_matches_kube_scheduler() -> None:
    any_ip = HostPort("TCP", ALL_ADDRESSES, 8088)
    lo = HostPort("TCP", "127.0.0.1", 8088)
    node = HostPort("TCP", NODE_IP, 8088)
    assert any_ip.clashes(lo) and lo.clashes(any_ip)  # 0.0.0.0 overlaps every address
    assert lo.clashes(HostPort("TCP", "127.0.0.1", 8088))
    assert not lo.clashes(node)  # two distinct addresses share a port
    assert not any_ip.clashes(HostPort("UDP", ALL_ADDRESSES, 8088))  # other protocol
    assert not any_ip.clashes(HostPort("TCP", ALL_ADDRESSES, 8089))


addresses = st.sampled_from([ALL_ADDRESSES, "127.0.0.1", NODE_IP])
host_ports = st.builds(
    HostPort, st.sampled_from(["TCP", "UDP", "SCTP"]), addresses, st.integers(8087, 8089)
)


@given(host_ports, host_ports)
def test_clash_is_symmetric_and_needs_protocol_and_port(a: HostPort, b: HostPort) -> None:
    assert a.clashes(b) == b.clashes(a)
    if a.clashes(b):
        assert (a.protocol, a.host_port) == (b.protocol, b.host_port)
    assert a.clashes(a)


def test_admission_refuses_a_clash_and_names_the_holder() -> None:
    table = PortMapTable()
    assert table.admit("default/a", [tcp(8088)]) is None
    clash = table.admit("default/b", [tcp(9000), tcp(8088, host_ip="127.0.0.1")])
    assert clash == Clash(HostPort("TCP", "127.0.0.1", 8088), "default/a", tcp(8088).host)
    assert "Predicate NodePorts failed: node(s) didn't have free ports" in clash.message
    assert "default/a" in clash.message
    assert not table.holds("default/b")  # a refused pod reserves nothing, not even 9000
    assert table.admit("default/c", [tcp(9000)]) is None


def test_readmitting_a_pod_replaces_its_ports_and_keeps_its_address() -> None:
    table = PortMapTable()
    table.admit("default/a", [tcp(8088)])
    assert table.set_pod_ip("default/a", "10.244.2.5")
    assert table.admit("default/a", [tcp(8088), tcp(8443, 443)]) is None  # never clashes itself
    assert [r.listen_port for r in table.relays(NODE_IP)] == [8088, 8443]
    assert table.admit("default/a", []) is None
    assert not table.holds("default/a") and table.relays(NODE_IP) == []


def test_ports_are_relayed_once_the_pod_has_an_address_and_released_with_it() -> None:
    table = PortMapTable()
    table.admit("default/a", [tcp(8088), tcp(8089, 81, host_ip="127.0.0.1")])
    assert table.relays(NODE_IP) == []  # reserved, but no sandbox yet
    assert not table.set_pod_ip("default/other", "10.244.2.9")
    table.set_pod_ip("default/a", "10.244.2.5")
    assert table.relays(NODE_IP) == [
        Relay("TCP", "127.0.0.1", 8089, "10.244.2.5", 81),
        Relay("TCP", NODE_IP, 8088, "10.244.2.5", 80),  # 0.0.0.0 -> the node's own IP
    ]
    assert table.holder(Relay("TCP", NODE_IP, 8088, "10.244.2.5", 80)) == "default/a"
    assert table.holder(Relay("TCP", NODE_IP, 8088, "10.244.2.6", 80)) is None
    assert table.release("default/a") and not table.release("default/a")
    assert table.relays(NODE_IP) == [] and table.admit("default/b", [tcp(8088)]) is None


def test_sctp_is_reserved_but_not_relayed() -> None:
    table = PortMapTable()
    sctp = PortMapping(HostPort("SCTP", ALL_ADDRESSES, 9999), 9999)
    table.admit("default/a", [sctp, tcp(8088)])
    table.set_pod_ip("default/a", "10.244.2.5")
    assert [r.protocol for r in table.relays(NODE_IP)] == ["TCP"]
    assert table.admit("default/b", [sctp]) is not None


def test_snapshot_lists_every_published_port() -> None:
    table = PortMapTable()
    table.admit("default/a", [tcp(8088)])
    table.set_pod_ip("default/a", "10.244.2.5")
    assert table.snapshot() == [
        {"pod": "default/a", "protocol": "TCP", "host_ip": ALL_ADDRESSES, "host_port": 8088,
         "pod_ip": "10.244.2.5", "container_port": 80},
    ]  # fmt: skip
