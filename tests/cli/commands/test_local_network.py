"""`knemu up`'s network plumbing (switch namespace, host port, node namespaces) and its removal."""

from __future__ import annotations

import ipaddress
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from localcluster import unique_name, unique_subnet

from knemu.cli.commands.local import (
    Cluster,
    check_subnet_free,
    describe_leftovers,
    list_namespaces,
    run_ip,
    tear_down,
)
from knemu.errors import ConfigError, LocalError


def test_names_and_addresses_follow_the_plan(tmp_path: Path) -> None:
    c = Cluster("demo", "192.168.59.0/24", 3, str(tmp_path))
    assert c.host_ip == "192.168.59.1"
    assert [c.node_ip(n) for n in (1, 2, 3)] == ["192.168.59.11", "192.168.59.12", "192.168.59.13"]
    assert c.node_ns(2) == "knemu-demo-node-2" and c.host_link == "knh-demo"
    assert c.server_url == "http://192.168.59.1:6443"
    agent = c.component_configs("ipvs")["node-2"]
    assert agent["underlay_ip"] == "192.168.59.12" and agent["proxy_mode"] == "ipvs"
    assert agent["dns_upstream"] == "192.168.59.1:5353"
    assert "tun_offload" not in agent  # the agent's default: off
    assert c.component_configs("ipvs", "vxlan", tun_offload=True)["node-1"]["tun_offload"] is True
    cmds = c.network_commands()
    assert [
        "ip",
        "-n",
        "knemu-demo-node-3",
        "addr",
        "add",
        "192.168.59.13/24",
        "dev",
        "eth0",
    ] in cmds
    assert all(cmd[0] == "ip" for cmd in cmds)
    forwarding = [
        "ip",
        "netns",
        "exec",
        "knemu-demo-node-1",
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]
    assert forwarding in cmds


def test_a_jumbo_node_network_sets_every_link_of_it(tmp_path: Path) -> None:
    plain = Cluster("demo", "192.168.59.0/24", 2, str(tmp_path))
    assert not any("mtu" in cmd for cmd in plain.network_commands())  # 1500: the default
    jumbo = Cluster("demo", "192.168.59.0/24", 2, str(tmp_path), mtu_bytes=9000)
    lines = [" ".join(cmd) for cmd in jumbo.network_commands()]
    for link in ("knh-demo", "-n knemu-demo-sw h0", "-n knemu-demo-sw n1", "-n knemu-demo-sw n2",
                 "-n knemu-demo-node-1 eth0", "-n knemu-demo-node-2 eth0"):  # fmt: skip
        ns, _, dev = link.rpartition(" ")
        assert f"ip {ns + ' ' if ns else ''}link set {dev} mtu 9000" in lines, link
    assert lines[-1] == "ip -n knemu-demo-sw link set br0 mtu 9000"  # after its ports
    for bad in (500, 9217):
        with pytest.raises(ConfigError, match="--mtu"):
            Cluster("demo", "192.168.59.0/24", 2, str(tmp_path), mtu_bytes=bad)


@pytest.mark.parametrize(
    ("name", "subnet", "nodes"),
    [
        ("Bad", "192.168.59.0/24", 1),
        ("toolongname", "192.168.59.0/24", 1),
        ("ok", "300.1.1.0/24", 1),
        ("ok", "192.168.59.0/28", 5),
    ],
)
def test_bad_plans_are_rejected_with_the_flag_named(name: str, subnet: str, nodes: int) -> None:
    with pytest.raises(ConfigError):
        Cluster(name, subnet, nodes, "/tmp")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(unique_name(), unique_subnet(), 2, str(tmp_path))
    try:
        yield c
    finally:
        tear_down(c)


def tcp_reachable(src_ns: str, dst_ns: str, dst_ip: str) -> bool:
    """A real TCP exchange between two namespaces (no ping binary is installed here)."""
    server = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            dst_ns,
            "socat",
            "-T",
            "5",
            f"TCP-LISTEN:7777,bind={dst_ip}",
            "EXEC:echo pong",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(50):  # until the listener is up, bounded
            out = subprocess.run(
                ["ip", "netns", "exec", src_ns, "socat", "-T", "2", "-", f"TCP:{dst_ip}:7777"],
                input=b"",
                capture_output=True,
                check=False,
                timeout=10,
            )
            if out.stdout.strip() == b"pong":
                return True
            if server.poll() is not None:
                return False
            time.sleep(0.1)
        return False
    finally:
        server.kill()
        server.wait()


@pytest.mark.netns
def test_nodes_reach_each_other_and_the_host_then_vanish(cluster: Cluster) -> None:
    cluster.state_dir.mkdir(parents=True)
    (cluster.state_dir / "state.json").write_text('{"pids": {}}')
    for cmd in cluster.network_commands():
        run_ip(cmd)
    assert tcp_reachable(cluster.node_ns(1), cluster.node_ns(2), cluster.node_ip(2))
    # No default route inside a node: nothing can leave the machine.
    routes = run_ip(["ip", "-n", cluster.node_ns(1), "route"]).stdout
    assert "default" not in routes
    sysctl = ["ip", "netns", "exec", cluster.node_ns(1), "sysctl", "-n", "net.ipv4.ip_forward"]
    assert run_ip(sysctl).stdout.strip() == "1"
    running, found = describe_leftovers(cluster)
    assert not running and f"namespace {cluster.node_ns(1)}" in found
    removed = tear_down(cluster)
    assert f"link {cluster.host_link}" in removed
    assert list_namespaces(cluster.prefix) == []
    assert run_ip(["ip", "link", "show", cluster.host_link], check=False).returncode != 0
    assert not cluster.state_dir.exists()
    assert describe_leftovers(cluster) == (False, [])


def test_a_subnet_the_machine_already_routes_is_refused(tmp_path: Path) -> None:
    routes = run_ip(["ip", "-4", "route", "show", "table", "main"]).stdout.splitlines()
    taken = [r.split()[0] for r in routes if r.split() and r.split()[0] != "default"]
    if not taken:
        pytest.skip("this machine routes no IPv4 prefix besides the default")
    net = ipaddress.ip_network(taken[0], strict=False)
    subnet = next(net.subnets(new_prefix=24)) if net.prefixlen < 24 else net
    with pytest.raises(LocalError, match="already routes"):
        check_subnet_free(Cluster("ktx", str(subnet), 1, str(tmp_path)))
    check_subnet_free(Cluster("ktx", unique_subnet(), 1, str(tmp_path)))
