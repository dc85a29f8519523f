"""convert.py: every proto field filled from its Kubernetes source; total on any JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from knemu.apiserver.grpc_api import convert
from knemu.errors import LocalError
from knemu.proto import knemu_pb2 as pb

NODE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {
        "name": "node-1",
        "uid": "u-1",
        "resourceVersion": "42",
        "creationTimestamp": "2026-01-01T00:00:00Z",
        "labels": {"kubernetes.io/hostname": "node-1"},
        "annotations": {
            convert.FLANNEL_BACKEND_DATA: json.dumps({"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:01"}),
            convert.VXLAN_PORT_ANNOTATION: "4790",
        },
    },
    "spec": {"podCIDR": "10.244.1.0/24", "unschedulable": True},
    "status": {
        "addresses": [
            {"type": "Hostname", "address": "node-1"},
            {"type": "InternalIP", "address": "192.168.59.11"},
        ],
        "conditions": [
            {"type": "MemoryPressure", "status": "False"},
            {"type": "Ready", "status": "True"},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
    },
}


def test_node_every_field() -> None:
    node = convert.node_to_proto(NODE)
    assert node.metadata.name == "node-1"
    assert node.metadata.namespace == ""
    assert node.metadata.uid == "u-1"
    assert node.metadata.resource_version == 42
    assert node.metadata.creation_timestamp == "2026-01-01T00:00:00Z"
    assert dict(node.metadata.labels) == {"kubernetes.io/hostname": "node-1"}
    assert not node.metadata.deleting
    assert node.internal_ip == "192.168.59.11"
    assert node.pod_cidr == "10.244.1.0/24"
    assert node.vtep_mac == "aa:bb:cc:dd:ee:01"
    assert node.vxlan_port == 4790
    assert node.vni == 1
    assert node.ready
    assert node.unschedulable
    assert node.kubelet_port == 10250


def test_node_not_ready_and_podcidrs_fallback() -> None:
    obj = json.loads(json.dumps(NODE))
    obj["status"]["conditions"] = [{"type": "Ready", "status": "Unknown"}]
    obj["spec"] = {"podCIDRs": ["10.244.7.0/24"]}
    obj["metadata"]["annotations"][convert.FLANNEL_BACKEND_DATA] = "not json"
    obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:01Z"
    node = convert.node_to_proto(obj)
    assert not node.ready
    assert node.pod_cidr == "10.244.7.0/24"
    assert node.vtep_mac == ""
    assert node.metadata.deleting


POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web-1", "namespace": "default", "uid": "p-1", "resourceVersion": "7"},
    "spec": {
        "nodeName": "node-2",
        "restartPolicy": "Always",
        "hostname": "web-1",
        "subdomain": "web",
        "dnsPolicy": "None",
        "dnsConfig": {
            "nameservers": ["10.96.0.10"],
            "searches": ["default.svc.cluster.local"],
            "options": [{"name": "ndots", "value": "5"}, {"name": "edns0"}],
        },
        "hostNetwork": False,
        "terminationGracePeriodSeconds": 30,
        "containers": [
            {
                "name": "app",
                "image": "nginx:1.25",
                "command": ["/bin/sh", "-c"],
                "args": ["sleep 1"],
                "workingDir": "/srv",
                "env": [
                    {"name": "A", "value": "1"},
                    {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                ],
                "ports": [
                    {"name": "http", "containerPort": 80, "protocol": "TCP"},
                    {"containerPort": 53, "protocol": "UDP", "hostPort": 5353},
                ],
                "readinessProbe": {
                    "httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
                    "initialDelaySeconds": 1,
                    "periodSeconds": 2,
                    "timeoutSeconds": 3,
                    "successThreshold": 1,
                    "failureThreshold": 4,
                },
                "livenessProbe": {"tcpSocket": {"port": 80}},
            },
            {"name": "side", "image": "busybox", "livenessProbe": {"exec": {"command": ["true"]}}},
        ],
    },
    "status": {
        "phase": "Running",
        "podIP": "10.244.2.5",
        "conditions": [{"type": "Ready", "status": "True"}],
    },
}


def test_pod_every_field() -> None:
    pod = convert.pod_to_proto(POD)
    assert (pod.metadata.namespace, pod.metadata.name, pod.metadata.resource_version) == (
        "default",
        "web-1",
        7,
    )
    assert pod.node_name == "node-2"
    assert pod.restart_policy == "Always"
    assert (pod.hostname, pod.subdomain, pod.dns_policy) == ("web-1", "web", "None")
    assert list(pod.dns_config.nameservers) == ["10.96.0.10"]
    assert list(pod.dns_config.searches) == ["default.svc.cluster.local"]
    assert [(o.name, o.value) for o in pod.dns_config.options] == [("ndots", "5"), ("edns0", "")]
    assert not pod.host_network
    assert pod.termination_grace_period_s == 30
    assert (pod.phase, pod.pod_ip, pod.ready) == ("Running", "10.244.2.5", True)
    app, side = pod.containers
    assert (app.name, app.image, app.working_dir) == ("app", "nginx:1.25", "/srv")
    assert list(app.command) == ["/bin/sh", "-c"] and list(app.args) == ["sleep 1"]
    assert [(e.name, e.value) for e in app.env] == [("A", "1"), ("B", "")]
    assert [(p.name, p.container_port, p.protocol, p.host_port) for p in app.ports] == [
        ("http", 80, "TCP", 0),
        ("", 53, "UDP", 5353),
    ]
    rp = app.readiness_probe
    assert app.has_readiness_probe and rp.WhichOneof("handler") == "http_get"
    assert (rp.http_get.path, rp.http_get.port, rp.http_get.scheme) == ("/healthz", "http", "HTTP")
    assert (rp.initial_delay_s, rp.period_s, rp.timeout_s) == (1, 2, 3)
    assert (rp.success_threshold, rp.failure_threshold) == (1, 4)
    assert app.has_liveness_probe and app.liveness_probe.tcp_socket.port == "80"
    assert not side.has_readiness_probe
    assert side.readiness_probe.WhichOneof("handler") is None
    assert list(side.liveness_probe.exec.command) == ["true"]


def test_pod_ready_false_without_condition() -> None:
    obj = json.loads(json.dumps(POD))
    obj["status"] = {"phase": "Pending"}
    pod = convert.pod_to_proto(obj)
    assert pod.phase == "Pending" and not pod.ready and pod.pod_ip == ""


SERVICE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "9"},
    "spec": {
        "type": "LoadBalancer",
        "clusterIP": "10.96.3.4",
        "clusterIPs": ["10.96.3.4"],
        "selector": {"app": "web"},
        "ports": [
            {"name": "http", "protocol": "TCP", "port": 8080, "targetPort": 80, "nodePort": 30080},
            {"name": "alt", "protocol": "TCP", "port": 8081, "targetPort": "web-alt"},
            {"name": "dns", "protocol": "UDP", "port": 53, "appProtocol": "dns"},
        ],
        "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
        "externalIPs": ["192.168.59.200"],
        "externalTrafficPolicy": "Local",
        "internalTrafficPolicy": "Cluster",
        "publishNotReadyAddresses": True,
    },
    "status": {"loadBalancer": {"ingress": [{"ip": "192.168.59.100"}, {"hostname": "lb.example"}]}},
}


def test_service_every_field() -> None:
    svc = convert.service_to_proto(SERVICE)
    assert (svc.metadata.namespace, svc.metadata.name) == ("shop", "web")
    assert svc.type == "LoadBalancer"
    assert svc.cluster_ip == "10.96.3.4" and list(svc.cluster_ips) == ["10.96.3.4"]
    assert dict(svc.selector) == {"app": "web"}
    assert [
        (p.name, p.protocol, p.port, p.target_port, p.node_port, p.app_protocol) for p in svc.ports
    ] == [
        ("http", "TCP", 8080, "80", 30080, ""),
        ("alt", "TCP", 8081, "web-alt", 0, ""),
        ("dns", "UDP", 53, "", 0, "dns"),
    ]
    assert svc.session_affinity == "ClientIP" and svc.session_affinity_timeout_s == 600
    assert list(svc.external_ips) == ["192.168.59.200"]
    assert svc.external_traffic_policy == "Local" and svc.internal_traffic_policy == "Cluster"
    assert svc.publish_not_ready_addresses
    assert list(svc.load_balancer_ips) == ["192.168.59.100"]


def test_service_headless_and_external_name() -> None:
    headless = convert.service_to_proto({"kind": "Service", "spec": {"clusterIP": "None"}})
    assert headless.cluster_ip == "None"
    ext = convert.service_to_proto(
        {"kind": "Service", "spec": {"type": "ExternalName", "externalName": "db.example.com"}}
    )
    assert (ext.type, ext.external_name, ext.cluster_ip) == ("ExternalName", "db.example.com", "")


SLICE: dict[str, Any] = {
    "apiVersion": "discovery.k8s.io/v1",
    "kind": "EndpointSlice",
    "metadata": {
        "name": "web-abc",
        "namespace": "shop",
        "labels": {"kubernetes.io/service-name": "web"},
    },
    "addressType": "IPv4",
    "endpoints": [
        {
            "addresses": ["10.244.1.5"],
            "conditions": {"ready": True, "serving": True, "terminating": False},
            "hostname": "web-0",
            "nodeName": "node-1",
            "targetRef": {"kind": "Pod", "namespace": "shop", "name": "web-0", "uid": "p0"},
        },
        {"addresses": ["10.244.2.6"]},
        {"addresses": ["10.244.3.7"], "conditions": {"ready": False, "terminating": True}},
    ],
    "ports": [{"name": "http", "protocol": "TCP", "port": 80, "appProtocol": "http"}],
}


def test_endpoint_slice_every_field() -> None:
    es = convert.endpoint_slice_to_proto(SLICE)
    assert es.service_name == "web" and es.address_type == "IPv4"
    first, nil_conditions, terminating = es.endpoints
    assert list(first.addresses) == ["10.244.1.5"]
    assert (first.hostname, first.node_name) == ("web-0", "node-1")
    ref = first.target_ref
    assert (ref.kind, ref.namespace, ref.name, ref.uid) == ("Pod", "shop", "web-0", "p0")
    # discovery.k8s.io/v1: nil ready/serving mean true, nil terminating means false.
    c = nil_conditions.conditions
    assert (c.ready, c.serving, c.terminating) == (True, True, False)
    c = terminating.conditions
    assert (c.ready, c.serving, c.terminating) == (False, True, True)
    assert [(p.name, p.protocol, p.port, p.app_protocol) for p in es.ports] == [
        ("http", "TCP", 80, "http")
    ]


def test_network_policy_typed() -> None:
    spec = {
        "podSelector": {"matchLabels": {"app": "db"}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [
            {
                "from": [
                    {"podSelector": {}},
                    {
                        "namespaceSelector": {
                            "matchExpressions": [{"key": "team", "operator": "In", "values": ["a"]}]
                        },
                        "podSelector": {"matchLabels": {"role": "api"}},
                    },
                    {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                ],
                "ports": [
                    {"port": 5432},
                    {"protocol": "UDP", "port": "dns"},
                    {"port": 8000, "endPort": 8100},
                ],
            },
            {},
        ],
        "egress": [{"to": [{"namespaceSelector": {}}]}],
    }
    np = convert.network_policy_to_proto(
        {"kind": "NetworkPolicy", "metadata": {"name": "db", "namespace": "x"}, "spec": spec}
    )
    assert np.metadata.name == "db" and list(np.policy_types) == ["Ingress", "Egress"]
    assert dict(np.pod_selector.match_labels) == {"app": "db"}
    first, everyone = np.ingress
    anyone, both, block = first.from_peers
    # Presence survives: an empty podSelector ("every pod") is not an absent one.
    assert anyone.HasField("pod_selector") and not anyone.HasField("namespace_selector")
    assert both.HasField("pod_selector") and both.HasField("namespace_selector")
    expr = both.namespace_selector.match_expressions[0]
    assert (expr.key, expr.operator, list(expr.values)) == ("team", "In", ["a"])
    assert (block.ip_block.cidr, list(block.ip_block.except_cidrs)) == (
        "10.0.0.0/8",
        ["10.1.0.0/16"],
    )
    assert not block.HasField("pod_selector")
    ports = [(p.protocol, p.port, p.end_port) for p in first.ports]
    assert ports == [("", "5432", 0), ("UDP", "dns", 0), ("", "8000", 8100)]
    assert not everyone.from_peers and not everyone.ports  # a rule allowing everything
    assert np.egress[0].to_peers[0].HasField("namespace_selector")
    again = pb.NetworkPolicy.FromString(np.SerializeToString())
    assert again == np and again.ingress[0].from_peers[0].HasField("pod_selector")


def test_namespace_carries_its_labels() -> None:
    ns = convert.namespace_to_proto({"kind": "Namespace", "metadata": {"name": "prod",
                                     "labels": {"team": "a"}}})  # fmt: skip
    assert ns.metadata.name == "prod" and dict(ns.metadata.labels) == {"team": "a"}


@pytest.mark.parametrize(
    ("kind", "field", "source"),
    [
        ("Node", "node", NODE),
        ("Pod", "pod", POD),
        ("Service", "service", SERVICE),
        ("EndpointSlice", "endpoint_slice", SLICE),
        ("NetworkPolicy", "network_policy", {"kind": "NetworkPolicy", "spec": {}}),
        ("Namespace", "namespace", {"kind": "Namespace", "metadata": {"name": "x"}}),
    ],
)
def test_to_object_wraps_kind(kind: str, field: str, source: dict[str, Any]) -> None:
    wrapped = convert.to_object(kind, source)
    assert wrapped.WhichOneof("kind") == field
    assert pb.Object.FromString(wrapped.SerializeToString()) == wrapped


def test_to_object_unknown_kind_names_it() -> None:
    with pytest.raises(LocalError, match="Deployment"):
        convert.to_object("Deployment", {})


def test_wrong_types_become_defaults() -> None:
    weird = {
        "metadata": {"name": 5, "resourceVersion": "abc", "labels": ["x"], "annotations": None},
        "spec": {"ports": [{"port": "eighty", "targetPort": True}, "junk"], "clusterIP": None},
        "status": {"conditions": "Ready"},
    }
    svc = convert.service_to_proto(weird)
    assert svc.metadata.name == "5" and svc.metadata.resource_version == 0
    assert [(p.port, p.target_port) for p in svc.ports] == [(0, ""), (0, "")]
    pod = convert.pod_to_proto({"spec": {"containers": [{"ports": [{"containerPort": -1}]}]}})
    assert pod.containers[0].ports[0].container_port == 0
    odd_rv = convert.meta_to_proto({"metadata": {"resourceVersion": "²"}})
    assert odd_rv.resource_version == 0
    assert (
        convert.meta_to_proto({"metadata": {"resourceVersion": "9" * 5000}}).resource_version == 0
    )
    big = convert.pod_to_proto({"spec": {"terminationGracePeriodSeconds": 1 << 40}})
    assert big.termination_grace_period_s == (1 << 32) - 1


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)
_keys = st.sampled_from(
    [
        "metadata",
        "spec",
        "status",
        "ports",
        "endpoints",
        "containers",
        "conditions",
        "labels",
        "annotations",
        "addresses",
        "podCIDR",
        "env",
        "readinessProbe",
        "httpGet",
        "ingress",
        "resourceVersion",
        "targetPort",
        "loadBalancer",
        "clientIP",
        "sessionAffinityConfig",
    ]
)
_shaped = st.recursive(
    _json,
    lambda inner: st.dictionaries(_keys, inner, max_size=5) | st.lists(inner, max_size=3),
    max_leaves=40,
)


@settings(max_examples=120, deadline=None, derandomize=True)
@given(kind=st.sampled_from(sorted(convert.WATCHABLE_KINDS)), obj=st.dictionaries(_keys, _shaped))
def test_total_on_arbitrary_json(kind: str, obj: dict[str, Any]) -> None:
    wrapped = convert.to_object(kind, obj)
    wrapped.SerializeToString()  # every string valid UTF-8, every integer in range


def test_lone_surrogates_are_replaced() -> None:
    obj = json.loads('{"metadata": {"name": "a\\ud800b", "labels": {"k\\udfff": "v"}}}')
    pod = convert.to_object("Pod", obj)
    pod.SerializeToString()
    assert pod.pod.metadata.name == "a?b"
