"""RegisterNode / RenewLease / ReportPodStatus / RecordEvent round trips, and FakeNode."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from knemu import errors
from knemu.proto import knemu_pb2 as pb
from knemu.proto.client import Informer
from knemu.testing import FakeNode, fake_cluster, wait_for

from .stack import NOW, Stack, pod

MAC = "02:00:00:00:00:01"


async def test_register_renew_and_reregister_by_identity(stack: Stack) -> None:
    reply = await stack.client.register_node(
        identity="host-a", internal_ip="127.0.0.2", vtep_mac=MAC, kubelet_port=10251
    )
    node = reply.node
    assert node.metadata.name == "node-1" and node.pod_cidr == "10.244.1.0/24"
    assert (node.internal_ip, node.vtep_mac, node.vxlan_port, node.vni) == (
        "127.0.0.2",
        MAC,
        4789,
        1,
    )
    # NotReady until the agent, once up, renews its lease.
    assert not node.ready and node.kubelet_port == 10251
    assert (reply.renew_interval_s, reply.lease_duration_s) == (1.0, 4.0)
    again = await stack.client.register_node(
        identity="host-a", internal_ip="127.0.0.3", vtep_mac=MAC
    )
    assert again.node.metadata.name == "node-1" and again.node.internal_ip == "127.0.0.3"
    other = await stack.client.register_node(
        identity="host-b", internal_ip="127.0.0.4", vtep_mac=MAC
    )
    assert other.node.metadata.name == "node-2" and other.node.pod_cidr == "10.244.2.0/24"
    assert await stack.client.renew_lease("node-1")
    assert stack.store.get("Node", "", "node-1")["status"]["conditions"][0]["status"] == "True"
    assert not await stack.client.renew_lease("node-9")


async def test_registered_node_reaches_watchers_typed(stack: Stack) -> None:
    informer = Informer(stack.client, ["Node"], "test", lambda *a: None)
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.wait_synced(), 10)
        await stack.client.register_node(
            name="node-5", internal_ip="127.0.0.5", vtep_mac=MAC, vxlan_port=4790
        )
        node = await wait_for(lambda: informer.get("Node", "", "node-5"), 10, what="node-5")
        assert (node.pod_cidr, node.vtep_mac, node.vxlan_port, node.internal_ip) == (
            "10.244.5.0/24",
            MAC,
            4790,
            "127.0.0.5",
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_report_pod_status_and_record_event(stack: Stack) -> None:
    await stack.client.register_node(name="node-1", internal_ip="127.0.0.2", vtep_mac=MAC)
    created = stack.store.create(pod("web", node="node-1"), NOW)
    uid = created["metadata"]["uid"]
    report = pb.PodStatusReport(
        namespace="default",
        name="web",
        uid=uid,
        node_name="node-1",
        phase="Running",
        pod_ip="10.244.1.2",
        ready=True,
        container_statuses=[pb.ContainerStatus(name="c", ready=True, state="running")],
    )
    assert await stack.client.report_pod_status(report)
    stored = stack.store.get("Pod", "default", "web")
    assert stored is not None
    status = stored["status"]
    assert (status["phase"], status["podIP"], status["hostIP"]) == (
        "Running",
        "10.244.1.2",
        "127.0.0.2",
    )
    ready = [c for c in status["conditions"] if c["type"] == "Ready"]
    assert ready[0]["status"] == "True"
    report.uid = "someone-else"
    assert not await stack.client.report_pod_status(report)
    await stack.client.record_event(
        pb.EventReport(
            involved_kind="Pod",
            involved_namespace="default",
            involved_name="web",
            type="Warning",
            reason="BackOff",
            message="restarting failed container",
            source="kubelet/node-1",
        )
    )
    events = [e for e in stack.store.list("Event") if e.get("reason") == "BackOff"]
    assert len(events) == 1 and events[0]["involvedObject"]["name"] == "web"


async def test_bad_registration_names_the_field(stack: Stack) -> None:
    with pytest.raises(errors.LocalError, match="internal_ip 'nope'"):
        await stack.client.register_node(internal_ip="nope", vtep_mac=MAC)
    with pytest.raises(errors.LocalError, match="vxlan_port 0"):
        await stack.client.register_node(internal_ip="127.0.0.2", vtep_mac=MAC, vxlan_port=0)


def _running(stack: Stack, name: str) -> dict | None:  # type: ignore[type-arg]
    obj = stack.store.get("Pod", "default", name)
    if obj is None or (obj.get("status") or {}).get("phase") != "Running":
        return None
    return obj


async def test_fake_node_runs_its_pods_and_forgets_deleted_ones(stack: Stack) -> None:
    async with FakeNode(stack.target, name="node-2") as node:
        assert node.node is not None and node.node.pod_cidr == "10.244.2.0/24"
        assert ipaddress.ip_address(node.internal_ip) in ipaddress.ip_network("127.0.0.0/8")
        for name in ("a", "b"):
            stack.store.create(pod(name, node="node-2"), NOW)
        stack.store.create(pod("elsewhere", node="node-7"), NOW)
        a = await wait_for(lambda: _running(stack, "a"), 10, what="pod a Running")
        b = await wait_for(lambda: _running(stack, "b"), 10, what="pod b Running")
        ips = {a["status"]["podIP"], b["status"]["podIP"]}
        assert ips == {"10.244.2.2", "10.244.2.3"}  # .1 is the node's gateway
        assert "status" not in (stack.store.get("Pod", "default", "elsewhere") or {})
        stack.store.delete("Pod", "default", "a", NOW)
        await wait_for(lambda: ("default", "a") not in node.pod_ips, 10, what="a forgotten")
        stack.store.create(pod("c", node="node-2"), NOW)
        c = await wait_for(lambda: _running(stack, "c"), 10, what="pod c Running")
        assert c["status"]["podIP"] == a["status"]["podIP"]  # the freed address is reused


async def test_fake_cluster_registers_n_ready_nodes(stack: Stack) -> None:
    async with fake_cluster(stack.target, nodes=3) as cluster:
        assert [n.name for n in cluster.nodes] == ["node-1", "node-2", "node-3"]
        nodes = stack.store.list("Node")
        assert sorted(n["metadata"]["name"] for n in nodes) == ["node-1", "node-2", "node-3"]
        assert len({n.internal_ip for n in cluster.nodes}) == 3
        assert len({n.vtep_mac for n in cluster.nodes}) == 3
        assert cluster.node("node-2").node is not None
