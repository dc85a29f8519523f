"""OpenAPI schemas of ConfigMap, Secret, ServiceAccount, ReplicationController and Lease."""

from __future__ import annotations

from knemu.apiserver.rest.openapi.schemas import (
    CORE,
    Schema,
    array,
    boolean,
    free,
    integer,
    list_of,
    obj,
    ref,
    string,
    string_map,
    top,
)

COORDINATION = "io.k8s.api.coordination.v1."
_IMMUTABLE = boolean("If true, the data cannot be changed (only the object deleted).")
_MICROTIME = string("Time with microsecond precision (RFC 3339).", fmt="date-time")

CONFIG_TYPES: dict[str, Schema] = {
    CORE + "ConfigMap": top(
        "ConfigMap holds configuration data for pods to consume.",
        "",
        "v1",
        "ConfigMap",
        {
            "data": string_map(
                "Configuration data; keys consist of alphanumerics, '-', '_' or '.'."
            ),
            "binaryData": string_map("Binary data, base64 encoded; keys as for data."),
            "immutable": _IMMUTABLE,
        },
    ),
    CORE + "Secret": top(
        "Secret holds secret data of a certain type (at most 1 MiB).",
        "",
        "v1",
        "Secret",
        {
            "data": string_map("Secret data, each value base64 encoded."),
            "stringData": string_map("Write-only plain-text data, merged into data on write."),
            "type": string(
                "Used to facilitate programmatic handling of secret data "
                "(Opaque, kubernetes.io/tls, ...)."
            ),
            "immutable": _IMMUTABLE,
        },
    ),
    CORE + "ServiceAccount": top(
        "ServiceAccount binds together a name, understood by users and pods, and secrets.",
        "",
        "v1",
        "ServiceAccount",
        {
            "secrets": array(
                free("A reference to a Secret."), "Secrets pods may use.", merge_key="name"
            ),
            "imagePullSecrets": array(free("A reference to a Secret."), "Pull secrets."),
            "automountServiceAccountToken": boolean("Whether pods mount a token."),
        },
    ),
    CORE + "ReplicationControllerSpec": obj(
        "ReplicationControllerSpec is the specification of a replication controller.",
        {
            "replicas": integer("Number of desired pods. Defaults to 1."),
            "selector": string_map("Label query over pods; defaults to the template's labels."),
            "template": ref(CORE + "PodTemplateSpec", "The pods that will be created."),
            "minReadySeconds": integer("Seconds a new pod must be ready to count as available."),
        },
    ),
    CORE + "ReplicationController": top(
        "ReplicationController represents the configuration of a replication controller.",
        "",
        "v1",
        "ReplicationController",
        {
            "spec": ref(CORE + "ReplicationControllerSpec", "The desired behavior."),
            "status": free("Most recently observed status of the replication controller."),
        },
    ),
    COORDINATION + "Lease": top(
        "Lease defines a lease concept: here each node's heartbeat in kube-node-lease.",
        "coordination.k8s.io",
        "v1",
        "Lease",
        {
            "spec": obj(
                "The specification of the Lease.",
                {
                    "holderIdentity": string("The identity of the holder of the current lease."),
                    "leaseDurationSeconds": integer("Seconds candidates wait to force acquire."),
                    "acquireTime": _MICROTIME,
                    "renewTime": _MICROTIME,
                    "leaseTransitions": integer("The number of transitions of the holder."),
                },
            ),
        },
    ),
}

CONFIG_TYPES.update(
    {
        CORE + kind + "List": list_of(CORE + kind, "", "v1", kind + "List")
        for kind in ("ConfigMap", "Secret", "ServiceAccount", "ReplicationController")
    }
)
CONFIG_TYPES[COORDINATION + "LeaseList"] = list_of(
    COORDINATION + "Lease", "coordination.k8s.io", "v1", "LeaseList"
)

AUTHORIZATION = "io.k8s.api.authorization.v1."
AUTHENTICATION = "io.k8s.api.authentication.v1."
_REVIEW_STATUS = free("Filled in by the server from the RBAC policy (allowed, reason).")

CONFIG_TYPES.update(
    {
        AUTHORIZATION + "SelfSubjectAccessReview": top(
            "Checks whether the current user can perform an action.",
            "authorization.k8s.io",
            "v1",
            "SelfSubjectAccessReview",
            {
                "spec": obj(
                    "The action being checked: exactly one of the two attributes.",
                    {
                        "resourceAttributes": free(
                            "namespace, verb, group, resource, subresource, "
                            "name of a resource request."
                        ),
                        "nonResourceAttributes": free("path and verb of a non-resource request."),
                    },
                ),
                "status": _REVIEW_STATUS,
            },
        ),
        AUTHORIZATION + "SelfSubjectRulesReview": top(
            "Enumerates the actions the current user can perform within a namespace.",
            "authorization.k8s.io",
            "v1",
            "SelfSubjectRulesReview",
            {
                "spec": obj(
                    "The namespace to evaluate rules for.",
                    {"namespace": string("Namespace to evaluate rules for.")},
                ),
                "status": _REVIEW_STATUS,
            },
        ),
        AUTHENTICATION + "SelfSubjectReview": top(
            "Returns the user attributes the api-server gives the request.",
            "authentication.k8s.io",
            "v1",
            "SelfSubjectReview",
            {"status": free("userInfo: username and groups.")},
        ),
    }
)

METRICS = "io.k8s.metrics.pkg.apis.metrics.v1beta1."
_USAGE = string_map("cpu (nanocores, n) and memory (Ki) used, measured from /proc.")
_WINDOW = string("The interval the CPU rate was measured over.")

CONFIG_TYPES.update(
    {
        METRICS + "NodeMetrics": top(
            "The resource usage of a node: all processes of its agent and pods.",
            "metrics.k8s.io",
            "v1beta1",
            "NodeMetrics",
            {"timestamp": _MICROTIME, "window": _WINDOW, "usage": _USAGE},
        ),
        METRICS + "PodMetrics": top(
            "The resource usage of a pod's containers.",
            "metrics.k8s.io",
            "v1beta1",
            "PodMetrics",
            {
                "timestamp": _MICROTIME,
                "window": _WINDOW,
                "containers": array(
                    obj(
                        "One container's usage.",
                        {
                            "name": string("Container name."),
                            "usage": _USAGE,
                        },
                    ),
                    "Per-container usage.",
                ),
            },
        ),
        METRICS + "NodeMetricsList": list_of(
            METRICS + "NodeMetrics", "metrics.k8s.io", "v1beta1", "NodeMetricsList"
        ),
        METRICS + "PodMetricsList": list_of(
            METRICS + "PodMetrics", "metrics.k8s.io", "v1beta1", "PodMetricsList"
        ),
    }
)
