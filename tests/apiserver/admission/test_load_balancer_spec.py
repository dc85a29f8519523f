"""LoadBalancer spec fields: healthCheckNodePort (allocated for LoadBalancer with
externalTrafficPolicy Local only, from the NodePort range, never shared with a nodePort, kept on
update, dropped when no longer needed), loadBalancerSourceRanges, allocateLoadBalancerNodePorts."""

from __future__ import annotations

from typing import Any

import pytest

from knemu.apiserver.grpc_api.convert import service_to_proto
from knemu.errors import Invalid

from ..cluster import Cluster


def _lb(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"a": "b"}, "type": "LoadBalancer",
                 "ports": [{"port": 80}], **spec},
    }  # fmt: skip


def _update(cluster: Cluster, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
    return cluster.store.update(cluster.admission.admit_update(old, new, cluster.now), cluster.now)


def test_local_load_balancer_gets_a_port_distinct_from_its_node_ports(cluster: Cluster) -> None:
    svc = cluster.apply(_lb("web", externalTrafficPolicy="Local"))
    hc = svc["spec"]["healthCheckNodePort"]
    assert 30000 <= hc <= 32767 and hc != svc["spec"]["ports"][0]["nodePort"]
    other = cluster.apply(_lb("other", externalTrafficPolicy="Local"))
    assert other["spec"]["healthCheckNodePort"] not in (hc, svc["spec"]["ports"][0]["nodePort"])
    assert hc not in [p["nodePort"] for p in other["spec"]["ports"]]


def test_cluster_policy_and_node_port_services_get_none(cluster: Cluster) -> None:
    assert "healthCheckNodePort" not in cluster.apply(_lb("web"))["spec"]
    nodeport = cluster.apply(_lb("np", type="NodePort", externalTrafficPolicy="Local"))
    assert "healthCheckNodePort" not in nodeport["spec"]


def test_requested_port_is_honoured_kept_and_dropped_with_the_policy(cluster: Cluster) -> None:
    svc = cluster.apply(_lb("web", externalTrafficPolicy="Local", healthCheckNodePort=31500))
    assert svc["spec"]["healthCheckNodePort"] == 31500
    again = _update(cluster, svc, _lb("web", externalTrafficPolicy="Local"))
    assert again["spec"]["healthCheckNodePort"] == 31500  # an update keeps it
    assert "healthCheckNodePort" not in _update(cluster, again, _lb("web"))["spec"]


def test_taken_or_out_of_range_port_is_refused_with_the_field(cluster: Cluster) -> None:
    cluster.apply(_lb("web", externalTrafficPolicy="Local", healthCheckNodePort=31500))
    for name, port in (("taken", 31500), ("range", 8080)):
        bad = _lb(name, externalTrafficPolicy="Local", healthCheckNodePort=port)
        with pytest.raises(Invalid) as info:
            cluster.admission.admit_create(bad, cluster.now)
        (cause,) = info.value.causes
        assert cause.field == "spec.healthCheckNodePort"


def test_source_ranges_must_be_cidrs_and_reach_the_agents(cluster: Cluster) -> None:
    bad = _lb("bad", loadBalancerSourceRanges=["10.0.0.0/8", "nonsense"])
    with pytest.raises(Invalid) as info:
        cluster.admission.admit_create(bad, cluster.now)
    (cause,) = info.value.causes
    assert cause.field == "spec.loadBalancerSourceRanges[1]"
    svc = cluster.apply(_lb("ok", loadBalancerSourceRanges=["192.168.59.0/24"]))
    assert service_to_proto(svc).load_balancer_source_ranges == ["192.168.59.0/24"]


def test_no_node_ports_when_the_load_balancer_asks_for_none(cluster: Cluster) -> None:
    svc = cluster.apply(_lb("web", allocateLoadBalancerNodePorts=False))
    assert "nodePort" not in svc["spec"]["ports"][0]
