"""One bad input per validation rule: each asserts the field path and the reason."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from knemu.errors import Invalid, NotFound

from ..cluster import Cluster, load_yaml


def _svc(**spec: Any) -> dict[str, Any]:
    base = {"selector": {"app": "a"}, "ports": [{"port": 80}]}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "svc"},
        "spec": {**base, **spec},
    }


def _pod(**spec: Any) -> dict[str, Any]:
    base = {"containers": [{"name": "c", "image": "nginx"}]}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "pod"},
        "spec": {**base, **spec},
    }


def _deploy(**changes: Any) -> dict[str, Any]:
    obj = load_yaml("sample-deployment.yaml")[0]
    obj["spec"].update(changes)
    return obj


def _named(obj: dict[str, Any], name: str) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["metadata"]["name"] = name
    return obj


def _labelled(obj: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["metadata"]["labels"] = labels
    return obj


def _container_ports(*ports: dict[str, Any]) -> dict[str, Any]:
    return _pod(containers=[{"name": "c", "image": "nginx", "ports": list(ports)}])


TWO_PORTS_NO_NAMES = [{"port": 80}, {"port": 443}]
CASES: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "pod name is a DNS-1123 subdomain",
        _named(_pod(), "Bad_Name"),
        "metadata.name",
        "RFC 1123 subdomain",
    ),
    ("service name is a DNS-1035 label", _named(_svc(), "1svc"), "metadata.name", "DNS-1035 label"),
    ("service name may not have dots", _named(_svc(), "my.svc"), "metadata.name", "DNS-1035 label"),
    (
        "namespace name is a DNS-1123 label",
        {"kind": "Namespace", "metadata": {"name": "a.b"}},
        "metadata.name",
        "RFC 1123 label",
    ),
    (
        "label key",
        _labelled(_pod(), {"bad key!": "x"}),
        "metadata.labels",
        "name part must consist",
    ),
    ("label value", _labelled(_pod(), {"app": "-x-"}), "metadata.labels", "a valid label must be"),
    (
        "service port range",
        _svc(ports=[{"port": 70000}]),
        "spec.ports[0].port",
        "between 1 and 65535",
    ),
    ("service port zero", _svc(ports=[{"port": 0}]), "spec.ports[0].port", "between 1 and 65535"),
    (
        "targetPort number range",
        _svc(ports=[{"port": 80, "targetPort": 65536}]),
        "spec.ports[0].targetPort",
        "between 1 and 65535",
    ),
    (
        "targetPort name is an IANA_SVC_NAME",
        _svc(ports=[{"port": 80, "targetPort": "http_port"}]),
        "spec.ports[0].targetPort",
        "alpha-numeric characters (a-z, 0-9), and hyphens",
    ),
    (
        "targetPort name too long",
        _svc(ports=[{"port": 80, "targetPort": "a-very-long-port-name"}]),
        "spec.ports[0].targetPort",
        "no more than 15 characters",
    ),
    (
        "duplicate service port names",
        _svc(ports=[{"name": "web", "port": 80}, {"name": "web", "port": 81}]),
        "spec.ports[1].name",
        "Duplicate value",
    ),
    (
        "multi-port services need names",
        _svc(ports=TWO_PORTS_NO_NAMES),
        "spec.ports[0].name",
        "Required value",
    ),
    (
        "unknown service port protocol",
        _svc(ports=[{"port": 80, "protocol": "HTTP"}]),
        "spec.ports[0].protocol",
        'Unsupported value: "HTTP"',
    ),
    ("a service needs ports", _svc(ports=[]), "spec.ports", "Required value"),
    ("unknown service type", _svc(type="Magic"), "spec.type", 'Unsupported value: "Magic"'),
    (
        "nodePort on a ClusterIP service",
        _svc(ports=[{"port": 80, "nodePort": 30001}]),
        "spec.ports[0].nodePort",
        "may not be used when `type` is 'ClusterIP'",
    ),
    (
        "ExternalName needs externalName",
        _svc(type="ExternalName", selector=None),
        "spec.externalName",
        "Required value",
    ),
    (
        "ExternalName may not have a clusterIP",
        _svc(type="ExternalName", externalName="example.com", clusterIP="10.96.0.50"),
        "spec.clusterIP",
        "may not be set for ExternalName",
    ),
    (
        "headless only for ClusterIP",
        _svc(type="NodePort", clusterIP="None"),
        "spec.clusterIP",
        "may not be set to 'None' for NodePort services",
    ),
    (
        "clusterIP must be an IP",
        _svc(clusterIP="10.96.0.999"),
        "spec.clusterIP",
        "valid IP address",
    ),
    (
        "session affinity timeout",
        _svc(sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 0}}),
        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
        "greater than 0",
    ),
    (
        "externalTrafficPolicy only for NodePort/LoadBalancer",
        _svc(externalTrafficPolicy="Local"),
        "spec.externalTrafficPolicy",
        "may only be set",
    ),
    ("missing containers", _pod(containers=[]), "spec.containers", "Required value"),
    (
        "duplicate container names",
        _pod(containers=[{"name": "c", "image": "a"}, {"name": "c", "image": "b"}]),
        "spec.containers[1].name",
        'Duplicate value: "c"',
    ),
    (
        "container needs an image",
        _pod(containers=[{"name": "c"}]),
        "spec.containers[0].image",
        "Required value",
    ),
    (
        "container name is a DNS-1123 label",
        _pod(containers=[{"name": "C_1", "image": "a"}]),
        "spec.containers[0].name",
        "RFC 1123 label",
    ),
    (
        "containerPort range",
        _container_ports({"containerPort": 0}),
        "spec.containers[0].ports[0].containerPort",
        "between 1 and 65535",
    ),
    (
        "containerPort name is an IANA_SVC_NAME",
        _container_ports({"name": "web--port", "containerPort": 80}),
        "spec.containers[0].ports[0].name",
        "must not contain consecutive hyphens",
    ),
    (
        "containerPort name needs a letter",
        _container_ports({"name": "8080", "containerPort": 8080}),
        "spec.containers[0].ports[0].name",
        "at least one letter",
    ),
    (
        "duplicate containerPort names",
        _container_ports(
            {"name": "http", "containerPort": 80}, {"name": "http", "containerPort": 81}
        ),
        "spec.containers[0].ports[1].name",
        'Duplicate value: "http"',
    ),
    (
        "one hostPort claimed twice in a pod",
        _container_ports(
            {"containerPort": 80, "hostPort": 8080}, {"containerPort": 81, "hostPort": 8080}
        ),
        "spec.containers[0].ports[1].hostPort",
        'Duplicate value: "TCP//8080"',
    ),
    (
        "unknown containerPort protocol",
        _container_ports({"containerPort": 80, "protocol": "ICMP"}),
        "spec.containers[0].ports[0].protocol",
        'Unsupported value: "ICMP"',
    ),
    (
        "restartPolicy",
        _pod(restartPolicy="Sometimes"),
        "spec.restartPolicy",
        'Unsupported value: "Sometimes"',
    ),
    ("dnsPolicy", _pod(dnsPolicy="Google"), "spec.dnsPolicy", 'Unsupported value: "Google"'),
    (
        "selector must match template labels",
        _deploy(selector={"matchLabels": {"app": "other"}}),
        "spec.template.metadata.labels",
        "`selector` does not match template `labels`",
    ),
    ("deployment needs a selector", _deploy(selector=None), "spec.selector", "Required value"),
    (
        "deployment selector may not be empty",
        _deploy(selector={}),
        "spec.selector",
        "empty selector is invalid",
    ),
    ("replicas >= 0", _deploy(replicas=-1), "spec.replicas", "greater than or equal to 0"),
    (
        "replicaset selector must match template labels",
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "rs"},
            "spec": {
                "selector": {
                    "matchExpressions": [{"key": "app", "operator": "In", "values": ["x"]}]
                },
                "template": {
                    "metadata": {"labels": {"app": "y"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]},
                },
            },
        },
        "spec.template.metadata.labels",
        "`selector` does not match template `labels`",
    ),
    (
        "template restartPolicy must be Always",
        _deploy(
            template={
                "metadata": {"labels": {"app": "sample-app"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]},
            }
        ),
        "spec.template.spec.restartPolicy",
        'supported values: "Always"',
    ),
    (
        "rolling update may not have both zero",
        _deploy(
            strategy={
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0},
            }
        ),
        "spec.strategy.rollingUpdate.maxUnavailable",
        "may not be 0 when `maxSurge` is 0",
    ),
    (
        "unknown kind names the known kinds",
        {"kind": "Gateway", "metadata": {"name": "x"}},
        "kind",
        "known kinds: ClusterRole, ClusterRoleBinding, ConfigMap, ControllerRevision",
    ),
    (
        "apiVersion must fit the kind",
        {**_deploy(), "apiVersion": "extensions/v1beta1"},
        "apiVersion",
        'supported values: "apps/v1"',
    ),
]


@pytest.mark.parametrize(("what", "obj", "field", "reason"), CASES, ids=[c[0] for c in CASES])
def test_rejects(cluster: Cluster, what: str, obj: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(Invalid) as info:
        cluster.admission.admit_create(obj, cluster.now)
    causes = {c.field: c.message for c in info.value.causes}
    assert field in causes, f"{what}: expected an error at {field}, got {causes}"
    assert reason in causes[field], f"{what}: {causes[field]!r} does not say {reason!r}"
    assert info.value.http_status == 422
    assert field in str(info.value)


def test_all_errors_are_reported_at_once(cluster: Cluster) -> None:
    obj = _svc(ports=[{"port": 0, "protocol": "XTP"}], sessionAffinity="Sticky")
    with pytest.raises(Invalid) as info:
        cluster.admission.admit_create(obj, cluster.now)
    fields = {c.field for c in info.value.causes}
    assert {"spec.ports[0].port", "spec.ports[0].protocol", "spec.sessionAffinity"} <= fields


def test_namespace_must_exist(cluster: Cluster) -> None:
    obj = _pod()
    obj["metadata"]["namespace"] = "nowhere"
    with pytest.raises(NotFound, match='namespaces "nowhere" not found: create it first'):
        cluster.admission.admit_create(obj, cluster.now)


def test_cluster_ip_is_immutable(cluster: Cluster) -> None:
    stored = cluster.apply(_svc())
    changed = copy.deepcopy(stored)
    changed["spec"]["clusterIP"] = changed["spec"]["clusterIPs"][0] = "10.96.0.200"
    with pytest.raises(Invalid) as info:
        cluster.admission.admit_update(stored, changed, cluster.now)
    (cause,) = info.value.causes
    assert cause.field == "spec.clusterIP" and "field is immutable" in cause.message


def test_deployment_selector_is_immutable(cluster: Cluster) -> None:
    stored = cluster.apply(_deploy())
    changed = copy.deepcopy(stored)
    changed["spec"]["selector"] = {"matchLabels": {"app": "sample-app", "v": "2"}}
    changed["spec"]["template"]["metadata"]["labels"]["v"] = "2"
    with pytest.raises(Invalid) as info:
        cluster.admission.admit_update(stored, changed, cluster.now)
    assert [(c.field, c.message.endswith("field is immutable")) for c in info.value.causes] == [
        ("spec.selector", True)
    ]


def test_pod_spec_is_immutable_but_image(cluster: Cluster) -> None:
    stored = cluster.apply(_pod())
    new_image = copy.deepcopy(stored)
    new_image["spec"]["containers"][0]["image"] = "nginx:2"
    assert (
        cluster.admission.admit_update(stored, new_image, cluster.now)["spec"]["containers"][0][
            "image"
        ]
        == "nginx:2"
    )
    new_port = copy.deepcopy(stored)
    new_port["spec"]["containers"][0]["ports"] = [{"containerPort": 80}]
    with pytest.raises(Invalid) as info:
        cluster.admission.admit_update(stored, new_port, cluster.now)
    assert (
        info.value.causes[0].field == "spec"
        and "may not change fields" in info.value.causes[0].message
    )
