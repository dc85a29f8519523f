"""OpenAPI schemas of the kinds in named groups (apps, discovery.k8s.io, networking.k8s.io)."""

from __future__ import annotations

from knemu.apiserver.rest.openapi.schemas import (
    CORE,
    INTSTR,
    META,
    Schema,
    array,
    boolean,
    free,
    integer,
    list_of,
    obj,
    ref,
    string,
    strings,
    top,
)

APPS = "io.k8s.api.apps.v1."
DISCOVERY = "io.k8s.api.discovery.v1."
NETWORKING = "io.k8s.api.networking.v1."

_SELECTOR = ref(META + "LabelSelector", "Label query over pods; must match the template's labels.")
_TEMPLATE = ref(CORE + "PodTemplateSpec", "The pods that will be created.")


def _deployment_spec() -> Schema:
    return obj(
        "DeploymentSpec is the specification of the desired behavior of the Deployment.",
        {
            "replicas": integer("Number of desired pods. Defaults to 1."),
            "selector": _SELECTOR,
            "template": _TEMPLATE,
            "strategy": obj(
                "The deployment strategy to use to replace existing pods with new ones.",
                {
                    "type": string("Type of deployment.", ("Recreate", "RollingUpdate")),
                    "rollingUpdate": obj(
                        "Rolling update parameters.",
                        {
                            "maxUnavailable": ref(INTSTR, "Pods that can be unavailable (25%)."),
                            "maxSurge": ref(INTSTR, "Pods over the desired number (25%)."),
                        },
                    ),
                },
            ),
            "minReadySeconds": integer("Seconds a new pod must be ready to count as available."),
            "revisionHistoryLimit": integer("Old ReplicaSets to retain for rollback (10)."),
            "paused": boolean("Indicates that the deployment is paused."),
            "progressDeadlineSeconds": integer("Seconds before a stalled rollout is reported."),
        },
        ("selector", "template"),
    )


def _daemon_set_spec() -> Schema:
    return obj(
        "DaemonSetSpec is the specification of a daemon set.",
        {
            "selector": _SELECTOR,
            "template": ref(CORE + "PodTemplateSpec", "The pod run on every eligible node."),
            "updateStrategy": obj(
                "An update strategy to replace existing DaemonSet pods with new pods.",
                {
                    "type": string("Type of daemon set update.", ("OnDelete", "RollingUpdate")),
                    "rollingUpdate": obj(
                        "Rolling update config params.",
                        {
                            "maxUnavailable": ref(INTSTR, "Nodes without an available pod (1)."),
                            "maxSurge": ref(INTSTR, "Nodes with an extra new pod (0)."),
                        },
                    ),
                },
            ),
            "minReadySeconds": integer("Seconds a new pod must be ready to count as available."),
            "revisionHistoryLimit": integer("Old history to retain for rollback (10)."),
        },
        ("selector", "template"),
    )


def _peer() -> Schema:
    return obj(
        "A peer: pods by namespace and pod selectors, or an IP block.",
        {
            "podSelector": ref(META + "LabelSelector", "Selects pods."),
            "namespaceSelector": ref(META + "LabelSelector", "Selects namespaces."),
            "ipBlock": obj(
                "A CIDR, less the exceptions.",
                {"cidr": string("A CIDR."), "except": strings("CIDRs excluded.")},
                ("cidr",),
            ),
        },
    )


def _policy_port() -> Schema:
    return obj(
        "A port to allow traffic on.",
        {
            "protocol": string("TCP, UDP or SCTP (default TCP).", ("SCTP", "TCP", "UDP")),
            "port": ref(INTSTR, "A port number or name on the pods."),
            "endPort": integer("With port, the end of an inclusive range."),
        },
    )


def _network_policy_spec() -> Schema:
    peers = array(ref(NETWORKING + "NetworkPolicyPeer"), "Peers allowed by this rule.")
    ports = array(ref(NETWORKING + "NetworkPolicyPort"), "Ports allowed by this rule.")
    return obj(
        "NetworkPolicySpec provides the specification of a NetworkPolicy.",
        {
            "podSelector": ref(META + "LabelSelector", "Selects the pods the policy applies to."),
            "policyTypes": strings("Ingress, Egress or both."),
            "ingress": array(
                obj("Traffic allowed in.", {"from": peers, "ports": ports}), "Ingress rules (ORed)."
            ),
            "egress": array(
                obj("Traffic allowed out.", {"to": peers, "ports": ports}), "Egress rules (ORed)."
            ),
        },
        ("podSelector",),
    )


def _ingress_backend() -> Schema:
    return obj(
        "IngressBackend describes all endpoints for a given service and port.",
        {
            "service": obj(
                "A Service as a backend.",
                {
                    "name": string("The referenced service."),
                    "port": obj(
                        "The port of the referenced service.",
                        {
                            "name": string("The name of the port on the Service."),
                            "number": integer("The numerical port number."),
                        },
                    ),
                },
                ("name",),
            ),
            "resource": free("An object reference to another Kubernetes resource."),
        },
    )


def _ingress_spec() -> Schema:
    backend = ref(NETWORKING + "IngressBackend")
    path = obj(
        "HTTPIngressPath associates a path with a backend.",
        {
            "path": string("Matched against the path of an incoming request."),
            "pathType": string(
                "How the path is matched.", ("Exact", "ImplementationSpecific", "Prefix")
            ),
            "backend": backend,
        },
        ("pathType", "backend"),
    )
    rule = obj(
        "A host rule: requests for the host are routed by their paths.",
        {
            "host": string("The fully qualified domain name (may start with '*.')."),
            "http": obj("HTTP paths.", {"paths": array(path, "Paths to backends.")}, ("paths",)),
        },
    )
    tls = obj(
        "The TLS configuration of hosts.",
        {"hosts": strings("Hosts in the TLS certificate."), "secretName": string("Secret.")},
    )
    return obj(
        "IngressSpec describes the Ingress the user wishes to exist.",
        {
            "ingressClassName": string("The name of the IngressClass of this Ingress."),
            "defaultBackend": backend,
            "tls": array(tls, "TLS configuration."),
            "rules": array(rule, "Host rules."),
        },
    )


GROUP_TYPES: dict[str, Schema] = {
    APPS + "DeploymentSpec": _deployment_spec(),
    APPS + "Deployment": top(
        "Deployment enables declarative updates for Pods and ReplicaSets.",
        "apps",
        "v1",
        "Deployment",
        {
            "spec": ref(APPS + "DeploymentSpec", "Desired behavior of the Deployment."),
            "status": free("Most recently observed status of the Deployment."),
        },
    ),
    APPS + "ReplicaSetSpec": obj(
        "ReplicaSetSpec is the specification of a ReplicaSet.",
        {
            "replicas": integer("Number of desired pods. Defaults to 1."),
            "selector": _SELECTOR,
            "template": _TEMPLATE,
            "minReadySeconds": integer("Seconds a new pod must be ready to count as available."),
        },
        ("selector",),
    ),
    APPS + "ReplicaSet": top(
        "ReplicaSet ensures that a specified number of pod replicas are running.",
        "apps",
        "v1",
        "ReplicaSet",
        {
            "spec": ref(APPS + "ReplicaSetSpec", "Desired behavior of the ReplicaSet."),
            "status": free("Most recently observed status of the ReplicaSet."),
        },
    ),
    APPS + "DaemonSetSpec": _daemon_set_spec(),
    APPS + "DaemonSet": top(
        "DaemonSet represents the configuration of a daemon set.",
        "apps",
        "v1",
        "DaemonSet",
        {
            "spec": ref(APPS + "DaemonSetSpec", "The desired behavior of this daemon set."),
            "status": free("The current status of this daemon set."),
        },
    ),
    APPS + "ControllerRevision": top(
        "ControllerRevision implements an immutable snapshot of state data.",
        "apps",
        "v1",
        "ControllerRevision",
        {
            "data": free("Data is the serialized representation of the state."),
            "revision": integer("Revision indicates the revision of the state represented."),
        },
    ),
    DISCOVERY + "EndpointSlice": top(
        "EndpointSlice represents a subset of the endpoints that implement a service.",
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        {
            "addressType": string("Type of address carried.", ("FQDN", "IPv4", "IPv6")),
            "endpoints": array(
                free("One endpoint: addresses, conditions, nodeName, targetRef."),
                "A list of unique endpoints in this slice.",
            ),
            "ports": array(free("A port: name, protocol, port."), "Ports exposed."),
        },
    ),
    NETWORKING + "NetworkPolicyPeer": _peer(),
    NETWORKING + "NetworkPolicyPort": _policy_port(),
    NETWORKING + "NetworkPolicySpec": _network_policy_spec(),
    NETWORKING + "NetworkPolicy": top(
        "NetworkPolicy describes what network traffic is allowed for a set of pods.",
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        {"spec": ref(NETWORKING + "NetworkPolicySpec", "The desired behavior.")},
    ),
    NETWORKING + "IngressBackend": _ingress_backend(),
    NETWORKING + "IngressSpec": _ingress_spec(),
    NETWORKING + "Ingress": top(
        "Ingress is a collection of rules that allow inbound connections to reach the "
        "endpoints defined by a backend.",
        "networking.k8s.io",
        "v1",
        "Ingress",
        {
            "spec": ref(NETWORKING + "IngressSpec", "The desired state of the Ingress."),
            "status": free("The current state of the Ingress: status.loadBalancer.ingress."),
        },
    ),
    NETWORKING + "IngressClass": top(
        "IngressClass represents the class of the Ingress, referenced by the Ingress Spec.",
        "networking.k8s.io",
        "v1",
        "IngressClass",
        {
            "spec": obj(
                "IngressClassSpec provides information about the class of an Ingress.",
                {
                    "controller": string("The name of the controller that handles this class."),
                    "parameters": free("A link to a custom resource with more configuration."),
                },
            )
        },
    ),
}

GROUP_TYPES.update(
    {
        prefix + kind + "List": list_of(prefix + kind, group, "v1", kind + "List")
        for prefix, group, kind in (
            (APPS, "apps", "Deployment"),
            (APPS, "apps", "ReplicaSet"),
            (APPS, "apps", "DaemonSet"),
            (APPS, "apps", "ControllerRevision"),
            (DISCOVERY, "discovery.k8s.io", "EndpointSlice"),
            (NETWORKING, "networking.k8s.io", "NetworkPolicy"),
            (NETWORKING, "networking.k8s.io", "Ingress"),
            (NETWORKING, "networking.k8s.io", "IngressClass"),
        )
    }
)
