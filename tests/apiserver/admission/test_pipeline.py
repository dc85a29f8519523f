"""Admission: normalisation, defaults, ClusterIP and NodePort allocation, seed manifests."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from knemu.apiserver.storage.store import Store
from knemu.config import ApiServerConfig
from knemu.errors import Exhausted, Invalid

from ..cluster import Cluster, load_yaml


def _svc(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"a": "b"}, "ports": [{"port": 80}], **spec},
    }


def test_service_defaults_like_kubernetes(cluster: Cluster) -> None:
    svc = cluster.apply(_svc("web", sessionAffinity="ClientIP"))
    spec = svc["spec"]
    assert svc["apiVersion"] == "v1" and svc["metadata"]["namespace"] == "default"
    assert spec["type"] == "ClusterIP"
    assert spec["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    assert spec["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10800}}
    assert spec["internalTrafficPolicy"] == "Cluster"
    assert spec["clusterIP"] == "10.96.0.2"  # lowest free: .1 is kubernetes, .10 kube-dns
    assert spec["clusterIPs"] == ["10.96.0.2"]
    plain = cluster.apply(_svc("plain"))
    assert plain["spec"]["sessionAffinity"] == "None"
    assert "sessionAffinityConfig" not in plain["spec"]


def test_pod_and_deployment_defaults(cluster: Cluster) -> None:
    pod = cluster.apply(
        {
            "kind": "pod",
            "metadata": {"name": "p"},
            "spec": {
                "containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}]}]
            },
        }
    )
    spec = pod["spec"]
    assert pod["kind"] == "Pod"  # kind normalised
    assert (spec["restartPolicy"], spec["dnsPolicy"], spec["terminationGracePeriodSeconds"]) == (
        "Always",
        "ClusterFirst",
        30,
    )
    assert spec["containers"][0]["ports"][0]["protocol"] == "TCP"
    assert spec["containers"][0]["imagePullPolicy"] == "Always"  # untagged image
    tolerations = {t["key"]: t["tolerationSeconds"] for t in spec["tolerations"]}
    assert tolerations == {"node.kubernetes.io/not-ready": 10, "node.kubernetes.io/unreachable": 10}
    assert pod["status"] == {"phase": "Pending", "qosClass": "BestEffort"}
    deploy = cluster.apply(
        {
            "kind": "deploy",
            "metadata": {"name": "d"},
            "spec": {
                "selector": {"matchLabels": {"a": "b"}},
                "template": {
                    "metadata": {"labels": {"a": "b"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx:1.16"}]},
                },
            },
        }
    )
    dspec = deploy["spec"]
    assert deploy["apiVersion"] == "apps/v1"
    assert dspec["replicas"] == 1 and dspec["revisionHistoryLimit"] == 10
    assert dspec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
    }
    assert dspec["template"]["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"


def test_requested_cluster_ip_is_honoured_and_conflicts_rejected(cluster: Cluster) -> None:
    assert cluster.apply(_svc("one", clusterIP="10.96.5.5"))["spec"]["clusterIP"] == "10.96.5.5"
    with pytest.raises(Invalid) as info:
        cluster.admission.admit_create(_svc("two", clusterIP="10.96.5.5"), cluster.now)
    (cause,) = info.value.causes
    assert cause.field == "spec.clusterIP"
    assert "provided IP is already allocated" in cause.message and "default/one" in cause.message
    with pytest.raises(Invalid, match="already allocated"):
        cluster.admission.admit_create(
            _svc("three", clusterIP="10.96.0.10"), cluster.now
        )  # kube-dns


def test_seed_002_load_balancer_applies_unchanged_with_a_warning(cluster: Cluster) -> None:
    svc = cluster.apply(load_yaml("seed-002/myapp-service-loadbalancer.yaml")[0])
    assert svc["spec"]["clusterIP"] == "10.0.171.239"
    assert svc["status"]["loadBalancer"]["ingress"] == [{"ip": "192.0.2.127"}]
    assert 30000 <= svc["spec"]["ports"][0]["nodePort"] <= 32767
    (warning,) = cluster.events("ClusterIPOutOfRange")
    assert warning["type"] == "Warning" and "10.0.171.239" in warning["message"]
    assert warning["involvedObject"]["name"] == "myapp-service"


def test_seed_002_node_port_and_cluster_ip_manifests(cluster: Cluster) -> None:
    nodeport = cluster.apply(load_yaml("seed-002/myapp-service-nodeport.yaml")[0])
    assert nodeport["spec"]["ports"][0]["nodePort"] == 30008
    clusterip = load_yaml("seed-002/myapp-service-clusterip.yaml")[0]
    clusterip["metadata"]["name"] = "myapp-clusterip"
    assert cluster.apply(clusterip)["spec"]["ports"][0]["targetPort"] == 9376


def test_node_port_conflict_names_the_holder(cluster: Cluster) -> None:
    cluster.apply(load_yaml("seed-002/myapp-service-nodeport.yaml")[0])
    other = _svc("other", type="NodePort", ports=[{"port": 80, "nodePort": 30008}])
    with pytest.raises(Invalid) as info:
        cluster.admission.admit_create(other, cluster.now)
    (cause,) = info.value.causes
    assert cause.field == "spec.ports[0].nodePort"
    assert (
        "provided port is already allocated" in cause.message
        and '"default/myapp-service"' in cause.message
    )


def test_node_port_out_of_range(cluster: Cluster) -> None:
    bad = _svc("bad", type="NodePort", ports=[{"port": 80, "nodePort": 8080}])
    with pytest.raises(Invalid) as info:
        cluster.admission.admit_create(bad, cluster.now)
    (cause,) = info.value.causes
    assert cause.field == "spec.ports[0].nodePort"
    assert "The range of valid ports is 30000-32767" in cause.message


def test_node_ports_are_allocated_lowest_free_and_kept_on_update(cluster: Cluster) -> None:
    first = cluster.apply(
        _svc("np1", type="NodePort", ports=[{"name": "a", "port": 80}, {"name": "b", "port": 81}])
    )
    assert [p["nodePort"] for p in first["spec"]["ports"]] == [30000, 30001]
    reapplied = _svc(
        "np1", type="NodePort", ports=[{"name": "a", "port": 80}, {"name": "b", "port": 81}]
    )
    updated = cluster.admission.admit_update(first, reapplied, cluster.now)
    assert [p["nodePort"] for p in updated["spec"]["ports"]] == [30000, 30001]
    assert updated["spec"]["clusterIP"] == first["spec"]["clusterIP"]  # kept, not re-allocated


def test_node_port_exhaustion_is_explicit() -> None:
    store = Store(":memory:")
    try:
        from knemu.apiserver import builtins
        from knemu.apiserver.admission.pipeline import Admission

        adm = Admission(store, ApiServerConfig(node_port_min=30000, node_port_max=30001))
        builtins.bootstrap(store, adm, 0)
        store.create(
            adm.admit_create(
                _svc(
                    "a", type="NodePort", ports=[{"name": "x", "port": 1}, {"name": "y", "port": 2}]
                ),
                0,
            ),
            0,
        )
        with pytest.raises(Exhausted, match="no free NodePort left in 30000-30001"):
            adm.admit_create(_svc("b", type="NodePort"), 0)
    finally:
        store.close()


def test_cluster_ip_exhaustion_is_explicit() -> None:
    store = Store(":memory:")
    try:
        from knemu.apiserver import builtins
        from knemu.apiserver.admission.pipeline import Admission

        adm = Admission(store, ApiServerConfig(service_cidr="10.96.0.0/28"))
        builtins.bootstrap(store, adm, 0)
        made = 0
        with pytest.raises(
            Exhausted, match=re.escape("no free ClusterIP left in service CIDR 10.96.0.0/28")
        ):
            for i in range(20):
                store.create(adm.admit_create(_svc(f"s{i}"), 0), 0)
                made += 1
        assert made == 12  # 16 - network - broadcast - .1 - .10
    finally:
        store.close()


def test_headless_and_external_name(cluster: Cluster) -> None:
    headless = cluster.apply(_svc("h", clusterIP="None"))
    assert headless["spec"]["clusterIPs"] == ["None"]
    ext = cluster.apply(
        {
            "kind": "Service",
            "metadata": {"name": "e"},
            "spec": {"type": "ExternalName", "externalName": "example.com"},
        }
    )
    assert "clusterIP" not in ext["spec"]


def test_generate_name_and_update_keeps_identity(cluster: Cluster) -> None:
    obj = {
        "kind": "Pod",
        "metadata": {"generateName": "web-"},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
    }
    admitted = cluster.admission.admit_create(obj, cluster.now)
    assert (
        admitted["metadata"]["name"].startswith("web-") and len(admitted["metadata"]["name"]) == 9
    )
    stored = cluster.store.create(admitted, cluster.now)
    renamed = copy.deepcopy(stored)
    renamed["metadata"]["name"] = "other"
    with pytest.raises(Invalid, match="cannot change"):
        cluster.admission.admit_update(stored, renamed, cluster.now)


def test_every_seed_manifest_is_admitted(cluster: Cluster) -> None:
    for name in (
        "sample-deployment.yaml",
        "sample-clusterip.yaml",
        "sample-clusterip-multi.yaml",
        "sample-named-port-pods.yaml",
        "sample-named-port-service.yaml",
    ):
        for obj in load_yaml(name):
            cluster.apply(obj)
    assert len(cluster.store.list("Service", "default")) == 4  # + kubernetes


@pytest.mark.parametrize(
    ("given", "kind"),
    [
        ("svc", "Service"),
        ("services", "Service"),
        ("deployments", "Deployment"),
        ("rs", "ReplicaSet"),
        ("endpointslices", "EndpointSlice"),
        ("endpoints", "Endpoints"),
        ("networkpolicies", "NetworkPolicy"),
        ("NODE", "Node"),
    ],
)
def test_kind_names_are_normalised(given: str, kind: str) -> None:
    from knemu.apiserver.admission.pipeline import canonical_kind

    assert canonical_kind(given) == kind


def test_namespaces_carry_their_name_label_which_users_cannot_change(cluster: Cluster) -> None:
    ns = cluster.apply({"kind": "Namespace", "metadata": {"name": "team-a", "labels": {"x": "1"}}})
    assert ns["metadata"]["labels"] == {"x": "1", "kubernetes.io/metadata.name": "team-a"}
    changed = copy.deepcopy(ns)
    changed["metadata"]["labels"]["kubernetes.io/metadata.name"] = "other"
    updated = cluster.admission.admit_update(ns, changed, cluster.now)
    assert updated["metadata"]["labels"]["kubernetes.io/metadata.name"] == "team-a"
