"""hostNetwork pods in the runtime, the sans-I/O decisions: address, hostname, /etc files."""

from __future__ import annotations

import os

import pytest

from knemu.errors import LocalError
from knemu.node_agent.cni import resolv
from knemu.node_agent.runtime import host_sandbox as sandbox_host, sandbox
from knemu.proto import knemu_pb2 as pb

NODE_RESOLV = resolv.ResolvConf(("192.168.59.1",), ("lab.example",), ())


def _pod(host_network: bool, **kw: object) -> pb.Pod:
    meta = pb.ObjectMeta(name="web", namespace="team", uid="0123-4567")
    return pb.Pod(metadata=meta, host_network=host_network, **kw)  # type: ignore[arg-type]


def test_a_host_network_pod_takes_the_node_name_and_ip() -> None:
    plan = sandbox_host.plan_network(_pod(True, hostname="ignored"), "node-2", "192.168.59.12")
    assert plan == sandbox_host.NetworkPlan(True, "node-2", "192.168.59.12")


def test_an_ordinary_pod_gets_its_own_name_and_an_address_from_ipam() -> None:
    plan = sandbox_host.plan_network(_pod(False, hostname="front"), "node-2", "192.168.59.12")
    assert plan == sandbox_host.NetworkPlan(False, "front", "")
    assert sandbox_host.plan_network(_pod(False), "node-2", "").hostname == "web"


def test_a_host_network_pod_needs_the_node_ip() -> None:
    with pytest.raises(LocalError, match="team/web has hostNetwork: true but node node-2"):
        sandbox_host.plan_network(_pod(True), "node-2", "")


def test_hosts_file_is_the_nodes() -> None:
    node = "127.0.0.1\tlocalhost\n192.168.59.12\tnode-2"
    text = sandbox_host.host_network_hosts_file(node)
    assert text.startswith("# Kubernetes-managed hosts file (host network).\n")
    assert text.endswith("192.168.59.12\tnode-2\n")
    assert sandbox_host.host_network_hosts_file("") == (
        "# Kubernetes-managed hosts file (host network).\n"
    )


@pytest.mark.parametrize(
    ("policy", "cluster"),
    [("ClusterFirst", False), ("", False), ("ClusterFirstWithHostNet", True), ("Default", False)],
)
def test_dns_policy_of_a_host_network_pod(policy: str, cluster: bool) -> None:
    conf = resolv.pod_resolv_conf(
        namespace="team", dns_policy=policy, dns_config=resolv.DnsConfig(), host_network=True,
        node_resolv=NODE_RESOLV,
    )  # fmt: skip
    if cluster:
        assert conf.nameservers == ("10.96.0.10",)
        assert conf.searches == ("team.svc.cluster.local", "svc.cluster.local", "cluster.local")
    else:
        assert conf == NODE_RESOLV


def test_nothing_is_killed_for_a_process_sharing_both_namespaces_with_the_agent() -> None:
    # The guard that keeps a hostNetwork pod's teardown from killing the node's processes:
    # the agent's own net and UTS namespaces are never a pod's.
    assert sandbox.pod_namespace_kind(os.getpid()) is None
    assert sandbox.kill_netns_processes(os.getpid(), 0) == []
    assert sandbox.pod_namespace_kind(2**22 + 1) is None  # no such process
