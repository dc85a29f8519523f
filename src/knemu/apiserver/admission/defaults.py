"""Defaulting: the fields Kubernetes fills in when a user leaves them out.

Follows pkg/apis/core/v1/defaults.go and pkg/apis/apps/v1/defaults.go (SetDefaults_Service,
SetDefaults_Pod, SetDefaults_Container, SetDefaults_Deployment, SetDefaults_ReplicaSet), plus
the DefaultTolerationSeconds admission plugin, which gives every pod 300 s (here:
``Timings.eviction_toleration_s``) of tolerance for the not-ready and unreachable taints.
Defaulting never raises: odd values are left for validation to reject with a field path.
"""

from __future__ import annotations

import math
from typing import Any

Obj = dict[str, Any]

DEFAULT_AFFINITY_TIMEOUT_S = 10800  # core/v1 DefaultClientIPServiceAffinitySeconds (3 hours)
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"


def _dict(parent: dict[str, Any], key: str) -> dict[str, Any]:
    value = parent.get(key)
    if not isinstance(value, dict):
        value = {}
        parent[key] = value
    return value


def _list(parent: dict[str, Any], key: str) -> list[Any]:
    value = parent.get(key)
    return value if isinstance(value, list) else []


def default_service(obj: Obj) -> None:
    spec = _dict(obj, "spec")
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["sessionAffinity"] == "ClientIP":
        client_ip = _dict(_dict(spec, "sessionAffinityConfig"), "clientIP")
        client_ip.setdefault("timeoutSeconds", DEFAULT_AFFINITY_TIMEOUT_S)
    for port in _list(spec, "ports"):
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            if port.get("targetPort") in (None, 0, ""):
                port["targetPort"] = port.get("port")
    stype = spec["type"]
    if stype != "ExternalName":
        spec.setdefault("internalTrafficPolicy", "Cluster")
    if stype in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if stype == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    status = _dict(obj, "status")
    status.setdefault("loadBalancer", {})


def default_container(container: Any) -> None:
    if not isinstance(container, dict):
        return
    for port in _list(container, "ports"):
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
    image = str(container.get("image") or "")
    tag = image.rsplit("/", 1)[-1]
    latest = ":" not in tag or tag.endswith(":latest")
    container.setdefault(
        "imagePullPolicy", "Always" if latest and "@" not in tag else "IfNotPresent"
    )
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("resources", {})


def default_pod_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    for key in ("containers", "initContainers"):
        for container in _list(spec, key):
            default_container(container)
    if spec.get("hostNetwork") is True:
        default_host_network_ports(spec)


def default_host_network_ports(spec: dict[str, Any]) -> None:
    """A hostNetwork pod's ports are the node's: hostPort defaults to containerPort, as
    Kubernetes' SetDefaults_PodSpec does, so the scheduler's NodePorts filter and the
    kubelet's admission keep two such pods wanting one port apart."""
    for key in ("containers", "initContainers"):
        for container in _list(spec, key):
            if not isinstance(container, dict):
                continue
            for port in _list(container, "ports"):
                if not isinstance(port, dict) or port.get("containerPort") is None:
                    continue
                if port.get("hostPort") in (None, 0):
                    port["hostPort"] = port["containerPort"]


def default_tolerations(spec: dict[str, Any], toleration_s: float) -> None:
    """DefaultTolerationSeconds: NoExecute tolerations for not-ready and unreachable nodes."""
    tolerations = spec.get("tolerations")
    if not isinstance(tolerations, list):
        tolerations = []
    seconds = math.ceil(toleration_s)
    for key in (NOT_READY_TAINT, UNREACHABLE_TAINT):
        if any(isinstance(t, dict) and t.get("key") == key for t in tolerations):
            continue
        tolerations.append(
            {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}
        )
    spec["tolerations"] = tolerations


def default_pod(obj: Obj, toleration_s: float) -> None:
    spec = _dict(obj, "spec")
    default_pod_spec(spec)
    default_tolerations(spec, toleration_s)


def _default_template(spec: dict[str, Any]) -> None:
    template = _dict(spec, "template")
    default_pod_spec(_dict(template, "spec"))
    # Go clients (kubectl rollout undo) send a template's zero creationTimestamp as null;
    # it means "unset", and must not make an equal template look different.
    template_meta = template.get("metadata")
    if isinstance(template_meta, dict) and template_meta.get("creationTimestamp", 0) is None:
        del template_meta["creationTimestamp"]


def default_deployment(obj: Obj) -> None:
    spec = _dict(obj, "spec")
    spec.setdefault("replicas", 1)
    strategy = _dict(spec, "strategy")
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = _dict(strategy, "rollingUpdate")
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    _default_template(spec)


def default_daemon_set(obj: Obj) -> None:
    """SetDefaults_DaemonSet: RollingUpdate, one pod unavailable at a time, no surge."""
    spec = _dict(obj, "spec")
    strategy = _dict(spec, "updateStrategy")
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = _dict(strategy, "rollingUpdate")
        rolling.setdefault("maxUnavailable", 1)
        rolling.setdefault("maxSurge", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    _default_template(spec)


def default_replica_set(obj: Obj) -> None:
    spec = _dict(obj, "spec")
    spec.setdefault("replicas", 1)
    _default_template(spec)


def default_namespace(obj: Obj) -> None:
    # Kubernetes >= 1.21 labels every namespace with its own name (NamespaceDefaultLabelName),
    # so NetworkPolicy namespaceSelectors can pick namespaces by name; users cannot change it.
    name = _dict(obj, "metadata").get("name")
    if isinstance(name, str) and name:
        _dict(_dict(obj, "metadata"), "labels")["kubernetes.io/metadata.name"] = name
    _dict(obj, "spec").setdefault("finalizers", ["kubernetes"])
    _dict(obj, "status").setdefault("phase", "Active")


def default_endpoint_slice(obj: Obj) -> None:
    for port in _list(obj, "ports"):
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")


def default_endpoints(obj: Obj) -> None:
    for subset in _list(obj, "subsets"):
        for port in _list(subset, "ports") if isinstance(subset, dict) else []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")


def default_network_policy(obj: Obj) -> None:
    spec = _dict(obj, "spec")
    if "policyTypes" not in spec:
        # networking/v1 defaults: Ingress always, Egress when egress rules are given.
        spec["policyTypes"] = ["Ingress", *(["Egress"] if spec.get("egress") else [])]


def default_event(obj: Obj) -> None:
    obj.setdefault("type", "Normal")
    obj.setdefault("count", 1)


def apply_defaults(obj: Obj, toleration_s: float) -> None:
    """Fill in defaults for an object of a canonical kind, in place."""
    kind = obj["kind"]
    if kind == "Pod":
        default_pod(obj, toleration_s)
        return
    table = {
        "Service": default_service,
        "Deployment": default_deployment,
        "ReplicaSet": default_replica_set,
        "DaemonSet": default_daemon_set,
        "Namespace": default_namespace,
        "EndpointSlice": default_endpoint_slice,
        "Endpoints": default_endpoints,
        "NetworkPolicy": default_network_policy,
        "Event": default_event,
    }
    if kind in table:
        table[kind](obj)
