"""Node registry: registration, identity, podCIDRs, pod status reports, agent events."""

from __future__ import annotations

import json
import re

import pytest

from knemu.apiserver.nodes import condition, is_ready
from knemu.config import ApiServerConfig
from knemu.errors import Exhausted, LocalError

from .cluster import Cluster


def test_register_assigns_node_n_and_pod_cidr(cluster: Cluster) -> None:
    node = cluster.add_node(1)
    meta, status = node["metadata"], node["status"]
    assert meta["name"] == "node-1"
    assert node["spec"]["podCIDR"] == "10.244.1.0/24"
    assert status["addresses"][0] == {"type": "InternalIP", "address": "192.168.59.11"}
    assert status["daemonEndpoints"]["kubeletEndpoint"]["Port"] == 10250
    backend = json.loads(meta["annotations"]["flannel.alpha.coreos.com/backend-data"])
    assert backend == {"VNI": 1, "VtepMAC": "02:00:00:00:00:01"}
    assert meta["annotations"]["flannel.alpha.coreos.com/public-ip"] == "192.168.59.11"
    assert meta["annotations"]["knemu.dev/vxlan-port"] == "4789"
    assert meta["labels"]["knemu.dev/identity"] == "host-1"
    assert is_ready(node)
    assert cluster.add_node(2)["spec"]["podCIDR"] == "10.244.2.0/24"
    assert cluster.events("RegisteredNode")


def test_same_identity_gets_the_same_node_back(cluster: Cluster) -> None:
    cluster.add_node(1)
    cluster.add_node(2)
    again = cluster.registry.register(
        "", "host-1", "192.168.59.99", "02:00:00:00:00:99", 4789, 10250, {}, cluster.now
    )
    assert again["metadata"]["name"] == "node-1"
    assert again["spec"]["podCIDR"] == "10.244.1.0/24"
    assert again["status"]["addresses"][0]["address"] == "192.168.59.99"
    assert len(cluster.store.list("Node")) == 2


def test_long_identity_is_hashed_into_the_label(cluster: Cluster) -> None:
    container_id = "f" * 64
    node = cluster.registry.register(
        "", container_id, "192.168.59.5", "02:00:00:00:00:05", 4789, 10250, {}, cluster.now
    )
    assert len(node["metadata"]["labels"]["knemu.dev/identity"]) <= 63
    again = cluster.registry.register(
        "", container_id, "192.168.59.5", "02:00:00:00:00:05", 4789, 10250, {}, cluster.now
    )
    assert again["metadata"]["name"] == node["metadata"]["name"]


def test_requested_names_and_lowest_free_index(cluster: Cluster) -> None:
    assert (
        cluster.registry.register(
            "node-3", "", "192.168.59.3", "02:00:00:00:00:03", 4789, 10250, {}, cluster.now
        )["spec"]["podCIDR"]
        == "10.244.3.0/24"
    )
    worker = cluster.registry.register(
        "worker", "", "192.168.59.4", "02:00:00:00:00:04", 4789, 10250, {}, cluster.now
    )
    assert worker["spec"]["podCIDR"] == "10.244.1.0/24"
    assert cluster.add_node(9)["metadata"]["name"] == "node-2"  # node-1 name free but index 1 taken


@pytest.mark.parametrize(
    ("ip", "mac", "complaint"),
    [("not-an-ip", "02:00:00:00:00:01", "not an IP"), ("192.168.59.1", "zz", "not a MAC")],
)
def test_bad_registration(cluster: Cluster, ip: str, mac: str, complaint: str) -> None:
    with pytest.raises(LocalError, match=complaint):
        cluster.registry.register("", "x", ip, mac, 4789, 10250, {}, cluster.now)


def test_a_wireguard_key_is_published_checked_and_withdrawn(cluster: Cluster) -> None:
    key = "q" * 43 + "="  # 32 bytes of base64

    def register(public_key: str) -> dict:
        return cluster.registry.register("", "host-1", "192.168.59.11", "02:00:00:00:00:01",
                                         4789, 10250, {}, cluster.now,
                                         wireguard_public_key=public_key)  # fmt: skip

    annotations = register(key)["metadata"]["annotations"]
    assert annotations["projectcalico.org/WireguardPublicKey"] == key
    with pytest.raises(LocalError, match="not a base64 X25519 key"):
        register("q" * 40)
    # The agent came back with --encryption none: no stale key for the peers to seal to.
    assert "projectcalico.org/WireguardPublicKey" not in register("")["metadata"]["annotations"]


def test_pod_cidr_exhaustion_is_explicit(cluster: Cluster) -> None:
    from knemu.apiserver.nodes import NodeRegistry

    small = NodeRegistry(
        cluster.store, ApiServerConfig(cluster_cidr="10.244.0.0/23"), cluster.recorder
    )
    small.register("", "a", "192.168.59.1", "02:00:00:00:00:01", 4789, 10250, {}, cluster.now)
    with pytest.raises(
        Exhausted, match=re.escape("no free podCIDR left in cluster CIDR 10.244.0.0/23")
    ):
        small.register("", "b", "192.168.59.2", "02:00:00:00:00:02", 4789, 10250, {}, cluster.now)


def _pod(cluster: Cluster) -> dict:
    cluster.add_node(1)
    cluster.apply(
        {
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "nginx"}, {"name": "d", "image": "x"}]},
        }
    )
    cluster.tick()
    pod = cluster.store.get("Pod", "default", "p")
    assert pod is not None
    return pod


def test_report_pod_status(cluster: Cluster) -> None:
    pod = _pod(cluster)
    report = {
        "namespace": "default",
        "name": "p",
        "uid": pod["metadata"]["uid"],
        "node_name": "node-1",
        "phase": "Running",
        "pod_ip": "10.244.1.2",
        "ready": False,
        "container_statuses": [
            {
                "name": "c",
                "ready": True,
                "state": "running",
                "image": "nginx",
                "started_at": "2023-11-14T22:13:20Z",
            },
            {
                "name": "d",
                "ready": False,
                "state": "waiting",
                "reason": "ImageUnknown",
                "message": "no workload for image x",
            },
        ],
    }
    assert cluster.registry.report_pod_status(report, cluster.now)
    status = cluster.store.get("Pod", "default", "p")["status"]  # type: ignore[index]
    assert (status["phase"], status["podIP"], status["hostIP"]) == (
        "Running",
        "10.244.1.2",
        "192.168.59.11",
    )
    assert status["podIPs"] == [{"ip": "10.244.1.2"}]
    assert "startTime" in status
    conds = {c["type"]: c["status"] for c in status["conditions"]}
    assert conds == {
        "Initialized": "True",
        "Ready": "False",
        "ContainersReady": "False",
        "PodScheduled": "True",
    }
    ready = condition({"status": status}, "Ready")
    assert ready is not None and ready["message"] == "containers with unready status: [d]"
    states = {c["name"]: c["state"] for c in status["containerStatuses"]}
    assert states["c"] == {"running": {"startedAt": "2023-11-14T22:13:20Z"}}
    assert states["d"] == {
        "waiting": {"reason": "ImageUnknown", "message": "no workload for image x"}
    }


def test_report_for_a_gone_or_replaced_pod_is_refused(cluster: Cluster) -> None:
    pod = _pod(cluster)
    report = {
        "namespace": "default",
        "name": "p",
        "uid": "someone-else",
        "node_name": "node-1",
        "phase": "Running",
    }
    assert cluster.registry.report_pod_status(report, cluster.now) is False
    cluster.store.delete("Pod", "default", "p", cluster.now)
    report["uid"] = pod["metadata"]["uid"]
    assert cluster.registry.report_pod_status(report, cluster.now) is False


def test_terminated_container(cluster: Cluster) -> None:
    pod = _pod(cluster)
    report = {
        "namespace": "default",
        "name": "p",
        "uid": pod["metadata"]["uid"],
        "node_name": "node-1",
        "phase": "Failed",
        "container_statuses": [{"name": "c", "state": "terminated", "exit_code": 2}],
    }
    assert cluster.registry.report_pod_status(report, cluster.now)
    status = cluster.store.get("Pod", "default", "p")["status"]  # type: ignore[index]
    term = status["containerStatuses"][0]["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (2, "Error")
    assert "podIP" not in status


def test_agent_events_are_recorded(cluster: Cluster) -> None:
    _pod(cluster)
    report = {
        "involved_kind": "Pod",
        "involved_namespace": "default",
        "involved_name": "p",
        "type": "Warning",
        "reason": "Failed",
        "message": "no workload for image x",
        "source": "kubelet/node-1",
    }
    cluster.registry.record_event(report, cluster.now)
    cluster.registry.record_event(report, cluster.now + 5)
    (event,) = cluster.events("Failed")
    assert event["count"] == 2
    assert event["source"] == {"component": "kubelet", "host": "node-1"}
    assert event["involvedObject"]["uid"]


def test_the_agents_backend_label_becomes_flannels_backend_type(cluster: Cluster) -> None:
    labels = {"knemu.dev/network-backend": "ipip"}
    node = cluster.registry.register(
        "", "h", "192.168.59.7", "02:00:00:00:00:07", 4789, 10250, labels, cluster.now
    )
    assert node["metadata"]["annotations"]["flannel.alpha.coreos.com/backend-type"] == "ipip"
    assert cluster.add_node(2)["metadata"]["annotations"][
        "flannel.alpha.coreos.com/backend-type"] == "vxlan"  # fmt: skip
    with pytest.raises(LocalError, match="network-backend='gre': not one of vxlan, ipip"):
        cluster.registry.register(
            "", "g", "192.168.59.8", "02:00:00:00:00:08", 4789, 10250,
            {"knemu.dev/network-backend": "gre"}, cluster.now,
        )  # fmt: skip
