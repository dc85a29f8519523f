"""What the console draws, as small JSON summaries of the stored objects (pure functions).

The browser's map needs a handful of fields per object; sending the summaries instead of the
objects keeps the live feed small (a Pod object is kilobytes, its summary a hundred bytes)
and keeps the page's JavaScript free of Kubernetes object walking.  Field meanings:

* Node: InternalIP (``status.addresses``), ``spec.podCIDR``, the VTEP MAC from flannel's
  ``backend-data`` annotation (the agent publishes it at registration), the Ready condition.
* Pod: node, IP, phase, Ready, labels (the tours select by label), terminating.
* Service: type, ClusterIP, NodePorts, LoadBalancer ingress IPs, ports.
* EndpointSlice: its service (label ``kubernetes.io/service-name``) and endpoints with their
  pod (``targetRef``), node and readiness.
"""

from __future__ import annotations

import json
from typing import Any

Obj = dict[str, Any]
KINDS = ("Node", "Pod", "Service", "EndpointSlice")
BACKEND_DATA = "flannel.alpha.coreos.com/backend-data"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def _condition(obj: Obj, ctype: str) -> str:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == ctype:
            return str(cond.get("status", "Unknown"))
    return "Unknown"


def _meta(obj: Obj) -> tuple[str, str, Obj]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or ""), meta


def node_summary(obj: Obj) -> Obj:
    _, name, meta = _meta(obj)
    status, spec = obj.get("status") or {}, obj.get("spec") or {}
    ips = [a.get("address") for a in status.get("addresses") or []
           if isinstance(a, dict) and a.get("type") == "InternalIP"]  # fmt: skip
    try:
        backend = json.loads((meta.get("annotations") or {}).get(BACKEND_DATA) or "{}")
    except ValueError:
        backend = {}
    return {
        "name": name,
        "internalIP": ips[0] if ips else "",
        "podCIDR": spec.get("podCIDR", ""),
        "vtepMAC": backend.get("VtepMAC", "") if isinstance(backend, dict) else "",
        "ready": _condition(obj, "Ready"),
        "unschedulable": bool(spec.get("unschedulable")),
    }


def pod_summary(obj: Obj) -> Obj:
    ns, name, meta = _meta(obj)
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return {
        "namespace": ns,
        "name": name,
        "node": spec.get("nodeName", ""),
        "ip": status.get("podIP", ""),
        "phase": status.get("phase", "Pending"),
        "ready": _condition(obj, "Ready") == "True",
        "labels": meta.get("labels") or {},
        "terminating": "deletionTimestamp" in meta,
        "hostNetwork": bool(spec.get("hostNetwork")),
    }


def service_summary(obj: Obj) -> Obj:
    ns, name, _ = _meta(obj)
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    ingress = (status.get("loadBalancer") or {}).get("ingress") or []
    return {
        "namespace": ns,
        "name": name,
        "type": spec.get("type", "ClusterIP"),
        "clusterIP": spec.get("clusterIP", ""),
        "loadBalancerIPs": [i.get("ip") for i in ingress if isinstance(i, dict) and i.get("ip")],
        "ports": [_port(p) for p in spec.get("ports") or [] if isinstance(p, dict)],
        "selector": spec.get("selector") or {},
    }


def _port(port: Obj) -> Obj:
    keys = ("name", "protocol", "port", "targetPort", "nodePort")
    return {k: port[k] for k in keys if port.get(k) is not None}


def slice_summary(obj: Obj) -> Obj:
    ns, name, meta = _meta(obj)
    endpoints = []
    for ep in obj.get("endpoints") or []:
        if not isinstance(ep, dict):
            continue
        ref = ep.get("targetRef") or {}
        conditions = ep.get("conditions") or {}
        for address in ep.get("addresses") or []:
            endpoints.append({
                "ip": address,
                "pod": ref.get("name", "") if ref.get("kind") == "Pod" else "",
                "node": ep.get("nodeName", ""),
                "ready": conditions.get("ready") is not False,
            })  # fmt: skip
    return {
        "namespace": ns,
        "name": name,
        "service": (meta.get("labels") or {}).get(SERVICE_NAME_LABEL, ""),
        "endpoints": endpoints,
        "ports": [
            {"name": p.get("name", ""), "port": p.get("port")}
            for p in obj.get("ports") or []
            if isinstance(p, dict)
        ],
    }


SUMMARIES = {
    "Node": node_summary,
    "Pod": pod_summary,
    "Service": service_summary,
    "EndpointSlice": slice_summary,
}


def feed_message(etype: str, kind: str, obj: Obj) -> Obj:
    """One message of the console's event stream for a watch event."""
    ns, name, _ = _meta(obj)
    summary = SUMMARIES[kind](obj) if etype != "DELETED" else {"namespace": ns, "name": name}
    return {"type": etype, "kind": kind, "object": summary}
