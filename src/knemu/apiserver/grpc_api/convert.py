"""Stored Kubernetes JSON objects -> the typed protobuf views of knemu.proto.

The api-server keeps objects as plain dicts shaped like the Kubernetes API; watchers (node
agents, DNS) get typed messages.  Every function here is pure and total: a missing or
malformed field becomes the proto default (0, "", False, empty list), never an exception,
because one odd object written through REST must not break every watch stream.

Field sources follow the Kubernetes API reference (core/v1 Node, Pod, Service;
discovery.k8s.io/v1 EndpointSlice; networking.k8s.io/v1 NetworkPolicy; core/v1 Namespace).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from knemu.apiserver.grpc_api.fields import (
    condition_true as _condition_true,
    field_bool as _bool,
    field_list as _list,
    field_map as _map,
    field_str as _str,
    field_str_map as _str_map,
    field_strs as _strs,
    field_u32 as _u32,
    meta_to_proto,
    port_string as _port_string,
)
from knemu.apiserver.grpc_api.netpol import (
    namespace_to_proto as namespace_to_proto,
    network_policy_to_proto as network_policy_to_proto,
)
from knemu.apiserver.grpc_api.pod_runtime import (
    apply_pod_security,
    container_runtime_fields,
    env_var_to_proto,
    pod_runtime_fields,
)
from knemu.errors import LocalError
from knemu.proto import knemu_pb2 as pb

# flannel publishes each node's VTEP as {"VNI": 1, "VtepMAC": "..."} in this annotation
# (flannel's vxlan backend, Documentation/backends.md); knemu does the same so a kernel vxlan
# device with static FDB entries can be configured from the Node object alone.
FLANNEL_BACKEND_DATA = "flannel.alpha.coreos.com/backend-data"
VXLAN_PORT_ANNOTATION = "knemu.dev/vxlan-port"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"  # discovery.k8s.io/v1 EndpointSlice


# ---- Node ----------------------------------------------------------------------------------


def _flannel_backend_data(annotations: Mapping[str, Any]) -> Mapping[str, Any]:
    raw = annotations.get(FLANNEL_BACKEND_DATA)
    if not isinstance(raw, str):
        return {}
    try:
        return _map(json.loads(raw))
    except (ValueError, RecursionError):
        return {}


def _internal_ip(status: Mapping[str, Any]) -> str:
    for addr in _list(status.get("addresses")):
        addr = _map(addr)
        if addr.get("type") == "InternalIP":
            return _str(addr.get("address"))
    return ""


def node_to_proto(obj: Mapping[str, Any]) -> pb.Node:
    spec, status = _map(obj.get("spec")), _map(obj.get("status"))
    annotations = _map(_map(obj.get("metadata")).get("annotations"))
    backend = _flannel_backend_data(annotations)
    pod_cidr = _str(spec.get("podCIDR")) or next(iter(_strs(spec.get("podCIDRs"))), "")
    kubelet = _map(_map(status.get("daemonEndpoints")).get("kubeletEndpoint"))
    return pb.Node(
        metadata=meta_to_proto(obj),
        internal_ip=_internal_ip(status),
        pod_cidr=pod_cidr,
        vtep_mac=_str(backend.get("VtepMAC")),
        vxlan_port=_u32(annotations.get(VXLAN_PORT_ANNOTATION)),
        vni=_u32(backend.get("VNI")),
        ready=_condition_true(status, "Ready"),
        unschedulable=_bool(spec.get("unschedulable")),
        kubelet_port=_u32(kubelet.get("Port")),
    )


# ---- Pod -----------------------------------------------------------------------------------


def _probe_to_proto(value: Any) -> pb.Probe:
    src = _map(value)
    probe = pb.Probe(
        initial_delay_s=_u32(src.get("initialDelaySeconds")),
        period_s=_u32(src.get("periodSeconds")),
        timeout_s=_u32(src.get("timeoutSeconds")),
        success_threshold=_u32(src.get("successThreshold")),
        failure_threshold=_u32(src.get("failureThreshold")),
    )
    if isinstance(src.get("httpGet"), Mapping):
        http = src["httpGet"]
        probe.http_get.CopyFrom(
            pb.HTTPGetAction(
                path=_str(http.get("path")),
                port=_port_string(http.get("port")),
                scheme=_str(http.get("scheme")),
                host=_str(http.get("host")),
            )
        )
    elif isinstance(src.get("tcpSocket"), Mapping):
        probe.tcp_socket.CopyFrom(
            pb.TCPSocketAction(port=_port_string(src["tcpSocket"].get("port")))
        )
    elif isinstance(src.get("exec"), Mapping):
        probe.exec.CopyFrom(pb.ExecAction(command=_strs(src["exec"].get("command"))))
    return probe


def _container_to_proto(value: Any) -> pb.Container:
    src = _map(value)
    env = [env_var_to_proto(e) for e in map(_map, _list(src.get("env")))]
    ports = [
        pb.ContainerPort(
            name=_str(p.get("name")),
            container_port=_u32(p.get("containerPort")),
            protocol=_str(p.get("protocol")),
            host_port=_u32(p.get("hostPort")),
            host_ip=_str(p.get("hostIP")),
        )
        for p in map(_map, _list(src.get("ports")))
    ]
    return pb.Container(
        name=_str(src.get("name")),
        image=_str(src.get("image")),
        command=_strs(src.get("command")),
        args=_strs(src.get("args")),
        env=env,
        ports=ports,
        readiness_probe=_probe_to_proto(src.get("readinessProbe")),
        liveness_probe=_probe_to_proto(src.get("livenessProbe")),
        working_dir=_str(src.get("workingDir")),
        has_readiness_probe=isinstance(src.get("readinessProbe"), Mapping),
        has_liveness_probe=isinstance(src.get("livenessProbe"), Mapping),
        startup_probe=_probe_to_proto(src.get("startupProbe")),
        has_startup_probe=isinstance(src.get("startupProbe"), Mapping),
        stdin=_bool(src.get("stdin")),
        stdin_once=_bool(src.get("stdinOnce")),
        **container_runtime_fields(src),
    )


def _dns_config_to_proto(value: Any) -> pb.PodDNSConfig:
    src = _map(value)
    options = [
        pb.DNSConfigOption(name=_str(o.get("name")), value=_str(o.get("value")))
        for o in map(_map, _list(src.get("options")))
    ]
    return pb.PodDNSConfig(
        nameservers=_strs(src.get("nameservers")),
        searches=_strs(src.get("searches")),
        options=options,
    )


def pod_to_proto(obj: Mapping[str, Any]) -> pb.Pod:
    spec, status = _map(obj.get("spec")), _map(obj.get("status"))
    pod = pb.Pod(
        metadata=meta_to_proto(obj),
        node_name=_str(spec.get("nodeName")),
        containers=[_container_to_proto(c) for c in _list(spec.get("containers"))],
        restart_policy=_str(spec.get("restartPolicy")),
        hostname=_str(spec.get("hostname")),
        subdomain=_str(spec.get("subdomain")),
        dns_policy=_str(spec.get("dnsPolicy")),
        dns_config=_dns_config_to_proto(spec.get("dnsConfig")),
        host_network=_bool(spec.get("hostNetwork")),
        termination_grace_period_s=_u32(spec.get("terminationGracePeriodSeconds")),
        phase=_str(status.get("phase")),
        pod_ip=_str(status.get("podIP")),
        ready=_condition_true(status, "Ready"),
        **pod_runtime_fields(spec, _container_to_proto),
    )
    apply_pod_security(pod, spec)
    return pod


# ---- Service -------------------------------------------------------------------------------


def _service_port_to_proto(value: Any) -> pb.ServicePort:
    src = _map(value)
    return pb.ServicePort(
        name=_str(src.get("name")),
        protocol=_str(src.get("protocol")),
        port=_u32(src.get("port")),
        target_port=_port_string(src.get("targetPort")),
        node_port=_u32(src.get("nodePort")),
        app_protocol=_str(src.get("appProtocol")),
    )


def service_to_proto(obj: Mapping[str, Any]) -> pb.Service:
    spec, status = _map(obj.get("spec")), _map(obj.get("status"))
    affinity = _map(_map(spec.get("sessionAffinityConfig")).get("clientIP"))
    ingress = _list(_map(status.get("loadBalancer")).get("ingress"))
    return pb.Service(
        metadata=meta_to_proto(obj),
        type=_str(spec.get("type")),
        cluster_ip=_str(spec.get("clusterIP")),  # "None" = headless, kept verbatim
        ports=[_service_port_to_proto(p) for p in _list(spec.get("ports"))],
        selector=_str_map(spec.get("selector")),
        session_affinity=_str(spec.get("sessionAffinity")),
        session_affinity_timeout_s=_u32(affinity.get("timeoutSeconds")),
        external_name=_str(spec.get("externalName")),
        publish_not_ready_addresses=_bool(spec.get("publishNotReadyAddresses")),
        external_ips=_strs(spec.get("externalIPs")),
        external_traffic_policy=_str(spec.get("externalTrafficPolicy")),
        internal_traffic_policy=_str(spec.get("internalTrafficPolicy")),
        load_balancer_ips=[_str(_map(i).get("ip")) for i in ingress if _map(i).get("ip")],
        cluster_ips=_strs(spec.get("clusterIPs")),
        health_check_node_port=_u32(spec.get("healthCheckNodePort")),
        load_balancer_source_ranges=_strs(spec.get("loadBalancerSourceRanges")),
    )


# ---- EndpointSlice -------------------------------------------------------------------------


def _conditions_to_proto(value: Any) -> pb.EndpointConditions:
    # discovery.k8s.io/v1 EndpointConditions: a nil ready or serving "should be interpreted
    # as true"; a nil terminating as false.
    src = _map(value)
    return pb.EndpointConditions(
        ready=_bool(src.get("ready"), default=True),
        serving=_bool(src.get("serving"), default=True),
        terminating=_bool(src.get("terminating"), default=False),
    )


def _endpoint_to_proto(value: Any) -> pb.Endpoint:
    src = _map(value)
    ref = _map(src.get("targetRef"))
    return pb.Endpoint(
        addresses=_strs(src.get("addresses")),
        conditions=_conditions_to_proto(src.get("conditions")),
        hostname=_str(src.get("hostname")),
        node_name=_str(src.get("nodeName")),
        target_ref=pb.ObjectReference(
            kind=_str(ref.get("kind")),
            namespace=_str(ref.get("namespace")),
            name=_str(ref.get("name")),
            uid=_str(ref.get("uid")),
        ),
    )


def endpoint_slice_to_proto(obj: Mapping[str, Any]) -> pb.EndpointSlice:
    labels = _map(_map(obj.get("metadata")).get("labels"))
    ports = [
        pb.EndpointPort(
            name=_str(p.get("name")),
            protocol=_str(p.get("protocol")),
            port=_u32(p.get("port")),
            app_protocol=_str(p.get("appProtocol")),
        )
        for p in map(_map, _list(obj.get("ports")))
    ]
    return pb.EndpointSlice(
        metadata=meta_to_proto(obj),
        service_name=_str(labels.get(SERVICE_NAME_LABEL)),
        address_type=_str(obj.get("addressType")),
        endpoints=[_endpoint_to_proto(e) for e in _list(obj.get("endpoints"))],
        ports=ports,
    )


# ---- dispatch ------------------------------------------------------------------------------

_WRAPPERS: dict[str, tuple[str, Callable[[Mapping[str, Any]], Any]]] = {
    "Node": ("node", node_to_proto),
    "Pod": ("pod", pod_to_proto),
    "Service": ("service", service_to_proto),
    "EndpointSlice": ("endpoint_slice", endpoint_slice_to_proto),
    "NetworkPolicy": ("network_policy", network_policy_to_proto),
    "Namespace": ("namespace", namespace_to_proto),
}
WATCHABLE_KINDS: frozenset[str] = frozenset(_WRAPPERS)


def to_object(kind: str, obj: Mapping[str, Any]) -> pb.Object:
    """Wrap a stored object of a watchable kind in pb.Object (the Watch payload)."""
    entry = _WRAPPERS.get(kind)
    if entry is None:
        raise LocalError(
            f"kind {kind!r} cannot be watched over gRPC; "
            f"use one of {', '.join(sorted(WATCHABLE_KINDS))}"
        )
    field, convert = entry
    message = pb.Object()
    getattr(message, field).CopyFrom(convert(obj))
    return message
