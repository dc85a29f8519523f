"""EndpointSlice, Endpoints and mirroring controllers (seed 003's Services)."""

from __future__ import annotations

import copy
from typing import Any

from ..cluster import Cluster, load_yaml

MANAGED_BY = "endpointslice.kubernetes.io/managed-by"


def _slices(cluster: Cluster, service: str) -> list[dict[str, Any]]:
    return [
        s
        for s in cluster.store.list("EndpointSlice", "default")
        if s["metadata"]["labels"]["kubernetes.io/service-name"] == service
    ]


def _pairs(slices: list[dict[str, Any]]) -> set[tuple[str, int, bool]]:
    return {
        (ep["addresses"][0], port["port"], ep["conditions"]["ready"])
        for s in slices
        for ep in s["endpoints"]
        for port in s["ports"]
    }


def test_named_target_port_resolves_per_pod_into_separate_slices(cluster: Cluster) -> None:
    cluster.add_node(1)
    for obj in load_yaml("sample-named-port-pods.yaml") + load_yaml(
        "sample-named-port-service.yaml"
    ):
        cluster.apply(obj)
    cluster.tick()
    pod80 = cluster.store.get("Pod", "default", "sample-named-port-pod-80")
    pod81 = cluster.store.get("Pod", "default", "sample-named-port-pod-81")
    assert pod80 is not None and pod81 is not None
    cluster.report(pod80, "10.244.1.78")
    cluster.report(pod81, "10.244.1.79")
    cluster.tick()
    slices = _slices(cluster, "sample-named-port-service")
    assert len(slices) == 2  # different resolved ports -> different slices
    assert _pairs(slices) == {("10.244.1.78", 80, True), ("10.244.1.79", 81, True)}
    for s in slices:
        assert s["metadata"]["labels"][MANAGED_BY] == "endpointslice-controller.k8s.io"
        assert s["metadata"]["name"].startswith("sample-named-port-service-")
        assert s["ports"][0]["name"] == "http-port"
        assert s["metadata"]["ownerReferences"][0]["kind"] == "Service"
        assert s["endpoints"][0]["targetRef"]["kind"] == "Pod"
        assert s["endpoints"][0]["nodeName"] == "node-1"
    endpoints = cluster.store.get("Endpoints", "default", "sample-named-port-service")
    assert endpoints is not None
    got = {
        (a["ip"], subset["ports"][0]["port"])
        for subset in endpoints["subsets"]
        for a in subset["addresses"]
    }
    assert got == {("10.244.1.78", 80), ("10.244.1.79", 81)}


def test_pod_without_the_named_port_is_left_out(cluster: Cluster) -> None:
    cluster.add_node(1)
    cluster.apply(load_yaml("sample-named-port-service.yaml")[0])
    cluster.apply(
        {
            "kind": "Pod",
            "metadata": {"name": "noport", "labels": {"app": "sample-app"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]},
        }
    )
    cluster.tick()
    cluster.report(cluster.store.get("Pod", "default", "noport"), "10.244.1.5")  # type: ignore[arg-type]
    cluster.tick()
    slices = _slices(cluster, "sample-named-port-service")
    assert [s["endpoints"] for s in slices] == [[]]  # only the empty placeholder
    assert "subsets" not in cluster.store.get("Endpoints", "default", "sample-named-port-service")  # type: ignore[operator]


def test_deployment_and_clusterip_service_endpoints(cluster: Cluster) -> None:
    for i in (1, 2, 3):
        cluster.add_node(i)
    cluster.apply(load_yaml("sample-deployment.yaml")[0])
    cluster.apply(load_yaml("sample-clusterip-multi.yaml")[0])
    cluster.tick()
    slices = _slices(cluster, "sample-clusterip-multi")
    assert [s["endpoints"] for s in slices] == [[]]  # no pod IPs yet
    cluster.run_pods()
    cluster.tick()
    slices = _slices(cluster, "sample-clusterip-multi")
    assert len(slices) == 1
    assert {p["port"] for p in slices[0]["ports"]} == {80, 443}
    assert len(slices[0]["endpoints"]) == 3
    assert all(
        ep["conditions"] == {"ready": True, "serving": True, "terminating": False}
        for ep in slices[0]["endpoints"]
    )


def test_not_ready_pod_is_not_ready_unless_publish_not_ready(cluster: Cluster) -> None:
    cluster.add_node(1)
    svc = load_yaml("sample-clusterip.yaml")[0]
    cluster.apply(svc)
    svc2 = load_yaml("sample-clusterip.yaml")[0]
    svc2["metadata"]["name"] = "publish"
    svc2["spec"]["publishNotReadyAddresses"] = True
    cluster.apply(svc2)
    cluster.apply(
        {
            "kind": "Pod",
            "metadata": {"name": "slow", "labels": {"app": "sample-app"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]},
        }
    )
    cluster.tick()
    cluster.report(cluster.store.get("Pod", "default", "slow"), "10.244.1.9", ready=False)  # type: ignore[arg-type]
    cluster.tick()
    assert _pairs(_slices(cluster, "sample-clusterip")) == {("10.244.1.9", 80, False)}
    assert _pairs(_slices(cluster, "publish")) == {("10.244.1.9", 80, True)}
    ep = cluster.store.get("Endpoints", "default", "sample-clusterip")
    assert ep is not None and ep["subsets"][0]["notReadyAddresses"][0]["ip"] == "10.244.1.9"


def test_headless_service_endpoint_hostnames(cluster: Cluster) -> None:
    cluster.add_node(1)
    cluster.apply(
        {
            "kind": "Service",
            "metadata": {"name": "db"},
            "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]},
        }
    )
    cluster.apply(
        {
            "kind": "Pod",
            "metadata": {"name": "db-0", "labels": {"app": "db"}},
            "spec": {
                "hostname": "db-0",
                "subdomain": "db",
                "containers": [{"name": "c", "image": "pg"}],
            },
        }
    )
    cluster.tick()
    cluster.report(cluster.store.get("Pod", "default", "db-0"), "10.244.1.20")  # type: ignore[arg-type]
    cluster.tick()
    (slice_,) = _slices(cluster, "db")
    assert slice_["endpoints"][0]["hostname"] == "db-0"
    assert "service.kubernetes.io/headless" in slice_["metadata"]["labels"]


def test_selectorless_service_mirrors_user_endpoints(cluster: Cluster) -> None:
    cluster.apply(
        {"kind": "Service", "metadata": {"name": "ext"}, "spec": {"ports": [{"port": 80}]}}
    )
    cluster.apply(
        {
            "kind": "Endpoints",
            "metadata": {"name": "ext"},
            "subsets": [{"addresses": [{"ip": "10.244.9.9"}], "ports": [{"port": 8080}]}],
        }
    )
    cluster.tick()
    (slice_,) = _slices(cluster, "ext")
    assert slice_["metadata"]["labels"][MANAGED_BY] == "endpointslicemirroring-controller.k8s.io"
    assert _pairs([slice_]) == {("10.244.9.9", 8080, True)}
    # the user's Endpoints object is left alone
    ep = cluster.store.get("Endpoints", "default", "ext")
    assert ep is not None and ep["subsets"][0]["addresses"] == [{"ip": "10.244.9.9"}]
    # deleting the Endpoints removes the mirror
    cluster.store.delete("Endpoints", "default", "ext", cluster.now)
    cluster.tick()
    assert _slices(cluster, "ext") == []


def test_service_deleted_removes_slices_and_endpoints(cluster: Cluster) -> None:
    cluster.apply(load_yaml("sample-clusterip.yaml")[0])
    cluster.tick()
    assert _slices(cluster, "sample-clusterip")
    cluster.store.delete("Service", "default", "sample-clusterip", cluster.now)
    cluster.tick()
    assert _slices(cluster, "sample-clusterip") == []
    assert cluster.store.get("Endpoints", "default", "sample-clusterip") is None


def test_terminating_pod_is_serving_but_not_ready(cluster: Cluster) -> None:
    cluster.add_node(1)
    cluster.apply(load_yaml("sample-clusterip.yaml")[0])
    cluster.apply(
        {
            "kind": "Pod",
            "metadata": {"name": "bye", "labels": {"app": "sample-app"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]},
        }
    )
    cluster.tick()
    cluster.report(cluster.store.get("Pod", "default", "bye"), "10.244.1.7")  # type: ignore[arg-type]
    pod = cluster.store.get("Pod", "default", "bye")
    assert pod is not None
    pod["metadata"]["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    cluster.store.update(pod, cluster.now)
    cluster.tick()
    (slice_,) = _slices(cluster, "sample-clusterip")
    assert slice_["endpoints"][0]["conditions"] == {
        "ready": False,
        "serving": True,
        "terminating": True,
    }


def test_load_balancer_gets_an_ingress_address_and_keeps_a_given_one(cluster: Cluster) -> None:
    seed = cluster.apply(load_yaml("seed-002/myapp-service-loadbalancer.yaml")[0])
    fresh = load_yaml("seed-002/myapp-service-loadbalancer.yaml")[0]
    fresh["metadata"]["name"] = "fresh"
    del fresh["spec"]["clusterIP"]
    del fresh["status"]
    cluster.apply(fresh)
    cluster.tick()
    kept = cluster.store.get("Service", "default", "myapp-service")
    got = cluster.store.get("Service", "default", "fresh")
    assert kept is not None and got is not None
    assert kept["status"] == seed["status"]
    assert got["status"]["loadBalancer"]["ingress"] == [{"ip": "192.0.2.1", "ipMode": "VIP"}]
    assert [e["involvedObject"]["name"] for e in cluster.events("EnsuredLoadBalancer")] == ["fresh"]
    changed = copy.deepcopy(got)
    changed["spec"]["type"] = "ClusterIP"  # the rest as read: nodePorts, externalTrafficPolicy
    cluster.store.update(cluster.admission.admit_update(got, changed, cluster.now), cluster.now)
    cluster.tick()
    after = cluster.store.get("Service", "default", "fresh")
    assert after is not None and after["status"]["loadBalancer"] == {}
    assert "nodePort" not in after["spec"]["ports"][0]
    assert "externalTrafficPolicy" not in after["spec"]
