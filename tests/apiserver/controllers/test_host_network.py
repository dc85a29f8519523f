"""hostNetwork pods in the api-server: hostPort defaults to containerPort, a different hostPort
is rejected, and the scheduler's NodePorts filter keeps two of them wanting one port apart."""

from __future__ import annotations

from typing import Any

import pytest

from knemu.errors import Invalid

from ..cluster import Cluster


def _pod(name: str, *ports: dict[str, Any], host_network: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "hostNetwork": host_network,
            "containers": [{"name": "web", "image": "nginx", "ports": list(ports)}],
        },
    }


def test_host_port_defaults_to_container_port(cluster: Cluster) -> None:
    pod = cluster.apply(
        _pod("hn", {"containerPort": 8080}, {"containerPort": 53, "protocol": "UDP"})
    )
    ports = pod["spec"]["containers"][0]["ports"]
    assert [(p["containerPort"], p["hostPort"], p["protocol"]) for p in ports] == [
        (8080, 8080, "TCP"),
        (53, 53, "UDP"),
    ]


def test_an_ordinary_pod_gets_no_host_port(cluster: Cluster) -> None:
    pod = cluster.apply(_pod("plain", {"containerPort": 8080}, host_network=False))
    assert "hostPort" not in pod["spec"]["containers"][0]["ports"][0]


def test_a_matching_host_port_is_accepted(cluster: Cluster) -> None:
    pod = cluster.apply(_pod("same", {"containerPort": 8080, "hostPort": 8080}))
    assert pod["spec"]["containers"][0]["ports"][0]["hostPort"] == 8080


def test_a_different_host_port_is_rejected(cluster: Cluster) -> None:
    with pytest.raises(Invalid) as info:
        cluster.admission.admit_create(
            _pod("odd", {"containerPort": 8080, "hostPort": 9090}), cluster.now
        )
    causes = {c.field: c.message for c in info.value.causes}
    field = "spec.containers[0].ports[0].hostPort"
    assert "must match `containerPort` when `hostNetwork` is true" in causes[field]
    # without hostNetwork the same ports are an ordinary hostPort mapping
    cluster.apply(_pod("mapped", {"containerPort": 8080, "hostPort": 9090}, host_network=False))


def test_two_host_network_pods_on_one_port_go_to_different_nodes(cluster: Cluster) -> None:
    for i in (1, 2):
        cluster.add_node(i)
    for name in ("a", "b", "c"):
        cluster.apply(_pod(name, {"containerPort": 8080}))
    cluster.tick()
    nodes = []
    for name in ("a", "b", "c"):
        pod = cluster.store.get("Pod", "default", name)
        assert pod is not None
        nodes.append(pod["spec"].get("nodeName"))
    assert sorted(n for n in nodes[:2] if n) == ["node-1", "node-2"]
    assert nodes[2] is None  # both nodes' port 8080 is taken
    events = cluster.events("FailedScheduling")
    assert events and "didn't have free ports" in events[0]["message"]
