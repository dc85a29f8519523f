"""Type checks of every field the api-server stores or a controller reads ("shapes").

Kubernetes decodes a request into typed Go structs, so ``metadata.ownerReferences: 5``,
``spec.tolerations: [5]`` or ``status: 5`` never reach storage.  knemu keeps objects as JSON
dicts, so this module does the decoder's job: a table per kind (``SHAPES``) says what type
each known field has, and ``check_shape(obj)`` returns a FieldError with the field path for
every value of the wrong type (HTTP 422 through admission).

A shape is written as data:

* a string names a scalar type: ``str``, ``bool``, ``int32``, ``int64``, ``number``,
  ``int-or-string`` (intstr.IntOrString), ``quantity`` (resource.Quantity: text or number),
  ``map`` (any JSON map), ``any``;
* ``[shape]`` is a list of that shape;
* ``{"*": shape}`` is a map with string keys and values of that shape;
* any other dict is a struct: its listed fields are checked, unlisted ones left alone (as
  Kubernetes drops unknown fields, knemu keeps them but no code reads them).

``null`` for a struct field means "not set", as in Kubernetes' decoder: the key is removed.
"""

from __future__ import annotations

from typing import Any

from knemu.apiserver.validation import ingress
from knemu.apiserver.validation.common import show
from knemu.errors import FieldError

Obj = dict[str, Any]
Shape = Any  # str | list[Shape] | dict[str, Shape]

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)

LABEL_SELECTOR: Shape = {
    "matchLabels": {"*": "str"},
    "matchExpressions": [{"key": "str", "operator": "str", "values": ["str"]}],
}
OWNER_REFERENCE: Shape = {
    "apiVersion": "str",
    "kind": "str",
    "name": "str",
    "uid": "str",
    "controller": "bool",
    "blockOwnerDeletion": "bool",
}
OBJECT_META: Shape = {
    "name": "str",
    "generateName": "str",
    "namespace": "str",
    "uid": "str",
    "resourceVersion": "str",
    "generation": "int64",
    "creationTimestamp": "str",
    "deletionTimestamp": "str",
    "deletionGracePeriodSeconds": "int64",
    "labels": {"*": "str"},
    "annotations": {"*": "str"},
    "ownerReferences": [OWNER_REFERENCE],
    "finalizers": ["str"],
    "managedFields": ["map"],
}
OBJECT_REFERENCE: Shape = {
    "kind": "str",
    "namespace": "str",
    "name": "str",
    "uid": "str",
    "apiVersion": "str",
    "resourceVersion": "str",
    "fieldPath": "str",
}
CONDITION: Shape = {
    "type": "str",
    "status": "str",
    "reason": "str",
    "message": "str",
    "lastTransitionTime": "str",
    "lastProbeTime": "str",
    "lastUpdateTime": "str",
    "lastHeartbeatTime": "str",
    "observedGeneration": "int64",
}
_PROBE: Shape = {
    "httpGet": {"path": "str", "port": "int-or-string", "host": "str", "scheme": "str"},
    "tcpSocket": {"port": "int-or-string", "host": "str"},
    "exec": {"command": ["str"]},
    "initialDelaySeconds": "int32",
    "periodSeconds": "int32",
    "timeoutSeconds": "int32",
    "successThreshold": "int32",
    "failureThreshold": "int32",
}
_CONTAINER: Shape = {
    "name": "str",
    "image": "str",
    "imagePullPolicy": "str",
    "command": ["str"],
    "args": ["str"],
    "workingDir": "str",
    "ports": [
        {
            "name": "str",
            "containerPort": "int32",
            "hostPort": "int32",
            "hostIP": "str",
            "protocol": "str",
        }
    ],
    "env": [{"name": "str", "value": "str", "valueFrom": "map"}],
    "envFrom": ["map"],
    "resources": {"limits": {"*": "quantity"}, "requests": {"*": "quantity"}},
    "readinessProbe": _PROBE,
    "livenessProbe": _PROBE,
    "startupProbe": _PROBE,
    "volumeMounts": [{"name": "str", "mountPath": "str", "readOnly": "bool"}],
    "securityContext": "map",
    "stdin": "bool",
    "stdinOnce": "bool",
    "tty": "bool",
}
_NODE_SELECTOR_TERM: Shape = {
    "matchExpressions": [{"key": "str", "operator": "str", "values": ["str"]}],
    "matchFields": [{"key": "str", "operator": "str", "values": ["str"]}],
}
POD_SPEC: Shape = {
    "containers": [_CONTAINER],
    "initContainers": [_CONTAINER],
    "nodeName": "str",
    "nodeSelector": {"*": "str"},
    "hostNetwork": "bool",
    "hostname": "str",
    "subdomain": "str",
    "restartPolicy": "str",
    "terminationGracePeriodSeconds": "int64",
    "activeDeadlineSeconds": "int64",
    "dnsPolicy": "str",
    "dnsConfig": {
        "nameservers": ["str"],
        "searches": ["str"],
        "options": [{"name": "str", "value": "str"}],
    },
    "hostAliases": [{"ip": "str", "hostnames": ["str"]}],
    "serviceAccountName": "str",
    "schedulerName": "str",
    "priority": "int32",
    "priorityClassName": "str",
    "tolerations": [
        {
            "key": "str",
            "operator": "str",
            "value": "str",
            "effect": "str",
            "tolerationSeconds": "int64",
        }
    ],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [_NODE_SELECTOR_TERM]
            },
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": "int32", "preference": _NODE_SELECTOR_TERM}
            ],
        },
        "podAffinity": "map",
        "podAntiAffinity": "map",
    },
    "volumes": [{"name": "str"}],
    "readinessGates": [{"conditionType": "str"}],
    "securityContext": "map",
    "enableServiceLinks": "bool",
    "setHostnameAsFQDN": "bool",
}
_CONTAINER_STATE: Shape = {
    "running": {"startedAt": "str"},
    "waiting": {"reason": "str", "message": "str"},
    "terminated": {
        "exitCode": "int32",
        "signal": "int32",
        "reason": "str",
        "message": "str",
        "startedAt": "str",
        "finishedAt": "str",
    },
}
_CONTAINER_STATUS: Shape = {
    "name": "str",
    "ready": "bool",
    "started": "bool",
    "restartCount": "int32",
    "image": "str",
    "imageID": "str",
    "containerID": "str",
    "state": _CONTAINER_STATE,
    "lastState": _CONTAINER_STATE,
}
POD_STATUS: Shape = {
    "phase": "str",
    "reason": "str",
    "message": "str",
    "podIP": "str",
    "podIPs": [{"ip": "str"}],
    "hostIP": "str",
    "hostIPs": [{"ip": "str"}],
    "startTime": "str",
    "qosClass": "str",
    "nominatedNodeName": "str",
    "conditions": [CONDITION],
    "containerStatuses": [_CONTAINER_STATUS],
    "initContainerStatuses": [_CONTAINER_STATUS],
}
POD_TEMPLATE: Shape = {"metadata": OBJECT_META, "spec": POD_SPEC}
_WORKLOAD_STATUS: Shape = {
    "replicas": "int32",
    "updatedReplicas": "int32",
    "readyReplicas": "int32",
    "availableReplicas": "int32",
    "unavailableReplicas": "int32",
    "fullyLabeledReplicas": "int32",
    "observedGeneration": "int64",
    "collisionCount": "int32",
    "conditions": [CONDITION],
}
_WORKLOAD_SPEC: Shape = {
    "replicas": "int32",
    "selector": LABEL_SELECTOR,
    "template": POD_TEMPLATE,
    "minReadySeconds": "int32",
}
DEPLOYMENT_SPEC: Shape = {
    **_WORKLOAD_SPEC,
    "strategy": {
        "type": "str",
        "rollingUpdate": {"maxSurge": "int-or-string", "maxUnavailable": "int-or-string"},
    },
    "revisionHistoryLimit": "int32",
    "progressDeadlineSeconds": "int32",
    "paused": "bool",
}
DAEMON_SET_SPEC: Shape = {
    "selector": LABEL_SELECTOR,
    "template": POD_TEMPLATE,
    "minReadySeconds": "int32",
    "updateStrategy": {
        "type": "str",
        "rollingUpdate": {"maxSurge": "int-or-string", "maxUnavailable": "int-or-string"},
    },
    "revisionHistoryLimit": "int32",
}
_DAEMON_SET_COUNTS = ("currentNumberScheduled", "numberMisscheduled", "desiredNumberScheduled",
                      "numberReady", "updatedNumberScheduled", "numberAvailable",
                      "numberUnavailable", "collisionCount")  # fmt: skip
DAEMON_SET_STATUS: Shape = {
    **dict.fromkeys(_DAEMON_SET_COUNTS, "int32"),
    "observedGeneration": "int64",
    "conditions": [CONDITION],
}
SERVICE_PORT: Shape = {
    "name": "str",
    "protocol": "str",
    "appProtocol": "str",
    "port": "int32",
    "targetPort": "int-or-string",
    "nodePort": "int32",
}
SERVICE_SPEC: Shape = {
    "type": "str",
    "selector": {"*": "str"},
    "ports": [SERVICE_PORT],
    "clusterIP": "str",
    "clusterIPs": ["str"],
    "externalIPs": ["str"],
    "externalName": "str",
    "sessionAffinity": "str",
    "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": "int32"}},
    "externalTrafficPolicy": "str",
    "internalTrafficPolicy": "str",
    "healthCheckNodePort": "int32",
    "loadBalancerIP": "str",
    "loadBalancerSourceRanges": ["str"],
    "loadBalancerClass": "str",
    "publishNotReadyAddresses": "bool",
    "allocateLoadBalancerNodePorts": "bool",
    "ipFamilies": ["str"],
    "ipFamilyPolicy": "str",
}
_LB_STATUS: Shape = {"ingress": [{"ip": "str", "hostname": "str", "ipMode": "str"}]}
_EP_ADDRESS: Shape = {
    "ip": "str",
    "hostname": "str",
    "nodeName": "str",
    "targetRef": OBJECT_REFERENCE,
}
_ENDPOINT_PORT: Shape = {"name": "str", "port": "int32", "protocol": "str", "appProtocol": "str"}
_NP_PEER: Shape = {
    "podSelector": LABEL_SELECTOR,
    "namespaceSelector": LABEL_SELECTOR,
    "ipBlock": {"cidr": "str", "except": ["str"]},
}
_NP_PORT: Shape = {"protocol": "str", "port": "int-or-string", "endPort": "int32"}

SHAPES: dict[str, Shape] = {
    "Namespace": {"spec": {"finalizers": ["str"]}, "status": {"phase": "str"}},
    "Node": {
        "spec": {
            "podCIDR": "str",
            "podCIDRs": ["str"],
            "providerID": "str",
            "unschedulable": "bool",
            "taints": [{"key": "str", "value": "str", "effect": "str", "timeAdded": "str"}],
        },
        "status": {
            "addresses": [{"type": "str", "address": "str"}],
            "conditions": [CONDITION],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": "int32"}},
            "capacity": {"*": "quantity"},
            "allocatable": {"*": "quantity"},
            "nodeInfo": {"*": "str"},
        },
    },
    "Pod": {"spec": POD_SPEC, "status": POD_STATUS},
    "Service": {
        "spec": SERVICE_SPEC,
        "status": {"loadBalancer": _LB_STATUS, "conditions": [CONDITION]},
    },
    "Endpoints": {
        "subsets": [
            {
                "addresses": [_EP_ADDRESS],
                "notReadyAddresses": [_EP_ADDRESS],
                "ports": [_ENDPOINT_PORT],
            }
        ]
    },
    "EndpointSlice": {
        "addressType": "str",
        "endpoints": [
            {
                "addresses": ["str"],
                "conditions": {"ready": "bool", "serving": "bool", "terminating": "bool"},
                "hostname": "str",
                "nodeName": "str",
                "zone": "str",
                "targetRef": OBJECT_REFERENCE,
            }
        ],
        "ports": [_ENDPOINT_PORT],
    },
    "Deployment": {"spec": DEPLOYMENT_SPEC, "status": _WORKLOAD_STATUS},
    "ReplicaSet": {"spec": _WORKLOAD_SPEC, "status": _WORKLOAD_STATUS},
    "DaemonSet": {"spec": DAEMON_SET_SPEC, "status": DAEMON_SET_STATUS},
    "ControllerRevision": {"data": "any", "revision": "int64"},
    "Event": {
        "involvedObject": OBJECT_REFERENCE,
        "reason": "str",
        "message": "str",
        "type": "str",
        "count": "int32",
        "firstTimestamp": "str",
        "lastTimestamp": "str",
        "eventTime": "str",
        "action": "str",
        "reportingComponent": "str",
        "reportingInstance": "str",
        "source": {"component": "str", "host": "str"},
    },
    "NetworkPolicy": {
        "spec": {
            "podSelector": LABEL_SELECTOR,
            "policyTypes": ["str"],
            "ingress": [{"from": [_NP_PEER], "ports": [_NP_PORT]}],
            "egress": [{"to": [_NP_PEER], "ports": [_NP_PORT]}],
        }
    },
}
SHAPES.update(ingress.SHAPES)  # networking.k8s.io Ingress, IngressClass
_TOP: Shape = {"apiVersion": "str", "kind": "str", "metadata": OBJECT_META}


def _scalar_ok(kind: str, value: Any) -> bool:
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int32":
        return is_int and _INT32[0] <= value <= _INT32[1]
    if kind == "int64":
        return is_int and _INT64[0] <= value <= _INT64[1]
    if kind == "number":
        return is_int or isinstance(value, float)
    if kind == "int-or-string":
        return isinstance(value, str) or (is_int and _INT32[0] <= value <= _INT32[1])
    if kind == "quantity":
        return isinstance(value, (str, float)) or is_int
    if kind == "map":
        return isinstance(value, dict)
    return kind == "any"


_DESCRIBE = {
    "str": "a string",
    "bool": "a boolean",
    "int32": "an integer in the int32 range (-2147483648 to 2147483647)",
    "int64": "an integer in the int64 range",
    "number": "a number",
    "int-or-string": "an int32 integer or a string",
    "quantity": "a quantity (a string like 100m or a number)",
    "map": "a map",
}


def _wrong(path: str, value: Any, expected: str) -> FieldError:
    text = show(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return FieldError(path, f"Invalid value: {text}: must be {expected}", "FieldValueTypeInvalid")


def check(value: Any, shape: Shape, path: str, errs: list[FieldError]) -> None:
    """Append a FieldError for every value under ``path`` that does not fit ``shape``."""
    if isinstance(shape, str):
        if not _scalar_ok(shape, value):
            errs.append(_wrong(path, value, _DESCRIBE[shape]))
    elif isinstance(shape, list):
        if not isinstance(value, list):
            errs.append(_wrong(path, value, "a list"))
            return
        for index, item in enumerate(value):
            check(item, shape[0], f"{path}[{index}]", errs)
    elif not isinstance(value, dict):
        errs.append(_wrong(path, value, "a map"))
    elif "*" in shape:
        for key, item in value.items():
            check(item, shape["*"], f"{path}[{key}]", errs)
    else:
        for key, sub in shape.items():
            if key not in value:
                continue
            if value[key] is None:
                del value[key]  # null means "not set", as Kubernetes' decoder reads it
                continue
            check(value[key], sub, f"{path}.{key}" if path else key, errs)


def check_shape(obj: Obj) -> list[FieldError]:
    """Every wrongly typed field of ``obj`` (whose kind is canonical), with its path."""
    errs: list[FieldError] = []
    check(obj, _TOP, "", errs)
    check(obj, SHAPES.get(str(obj.get("kind")), {}), "", errs)
    return errs[:50]  # enough to fix; a huge wrong list need not produce a huge answer
