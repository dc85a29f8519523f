"""``knemu describe``: one describer per kind (Service, Pod, Node, Deployment/ReplicaSet).

Each follows the matching kubectl describer (k8s.io/kubectl pkg/describe/describe.go) field by
field.  A service's ``Endpoints:`` line lists ``ip:port`` for every address serving each
service port, read from the Endpoints object (or its EndpointSlices), as in seed 003.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from knemu.cli.client import ApiClient, Obj, resolve_kind
from knemu.cli.output.describe_layout import (
    NONE,
    Writer,
    conditions_table,
    header,
    labels_and_annotations,
    map_lines,
    rfc1123,
)
from knemu.cli.output.printers import (
    age_of,
    endpoints_addresses,
    node_status,
    parse_time,
    pod_status,
)

Describer = Callable[[ApiClient, Obj, Writer, float], None]


def _service_endpoints(client: ApiClient, svc: Obj) -> Callable[[str], str]:
    """port name -> ``ip:port,...`` from the Endpoints object, else the EndpointSlices."""
    meta = svc["metadata"]
    ns, name = meta.get("namespace", "default"), meta["name"]
    ep = client.find(resolve_kind("endpoints"), ns, name)
    if ep is not None:
        return lambda port: endpoints_addresses(ep, {port}, limit=0)
    slices = (
        client.list(resolve_kind("endpointslices"), ns, f"kubernetes.io/service-name={name}").get(
            "items"
        )
        or []
    )

    def from_slices(port_name: str) -> str:
        items = []
        for es in slices:
            ports = [p for p in es.get("ports") or [] if (p.get("name") or "") == port_name]
            ready = [
                e
                for e in es.get("endpoints") or []
                if (e.get("conditions") or {}).get("ready", True)
            ]
            items += [
                f"{a}:{p.get('port')}"
                for p in ports
                for e in ready
                for a in e.get("addresses") or []
            ]
        return ",".join(items) or NONE

    return from_slices


def describe_service(client: ApiClient, svc: Obj, w: Writer, now: float) -> None:
    spec, status = svc.get("spec") or {}, svc.get("status") or {}
    header(w, svc)
    w.line(
        0,
        "Selector:",
        ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items())) or NONE,
    )
    kind = spec.get("type") or "ClusterIP"
    w.line(0, "Type:", kind)
    if spec.get("ipFamilyPolicy"):
        w.line(0, "IP Family Policy:", spec["ipFamilyPolicy"])
    if spec.get("ipFamilies"):
        w.line(0, "IP Families:", ",".join(spec["ipFamilies"]))
    w.line(0, "IP:", spec.get("clusterIP") or NONE)
    w.line(0, "IPs:", ",".join(spec.get("clusterIPs") or [spec.get("clusterIP") or NONE]))
    if kind == "ExternalName":
        w.line(0, "External Name:", spec.get("externalName", ""))
    ingress = (status.get("loadBalancer") or {}).get("ingress") or []
    if ingress:
        w.line(
            0,
            "LoadBalancer Ingress:",
            ", ".join(i.get("ip") or i.get("hostname", "") for i in ingress),
        )
    endpoints = _service_endpoints(client, svc)
    for port in spec.get("ports") or []:
        name, proto = port.get("name") or "<unset>", port.get("protocol") or "TCP"
        w.line(0, "Port:", name, f"{port.get('port')}/{proto}")
        w.line(0, "TargetPort:", f"{port.get('targetPort', port.get('port'))}/{proto}")
        if port.get("nodePort"):
            w.line(0, "NodePort:", name, f"{port['nodePort']}/{proto}")
        w.line(0, "Endpoints:", endpoints(port.get("name") or ""))
    w.line(0, "Session Affinity:", spec.get("sessionAffinity") or "None")
    if kind in ("NodePort", "LoadBalancer"):
        w.line(0, "External Traffic Policy:", spec.get("externalTrafficPolicy") or "Cluster")


def _container_state(state: Obj, w: Writer) -> None:
    for name, title in (
        ("running", "Running"),
        ("waiting", "Waiting"),
        ("terminated", "Terminated"),
    ):
        if name in state:
            detail = state[name] or {}
            w.line(2, "State:", title)
            if detail.get("reason"):
                w.line(3, "Reason:", detail["reason"])
            if detail.get("message"):
                w.line(3, "Message:", detail["message"])
            if name == "terminated":
                w.line(3, "Exit Code:", detail.get("exitCode", 0))
            if detail.get("startedAt"):
                w.line(3, "Started:", rfc1123(detail["startedAt"]))
            if detail.get("finishedAt"):
                w.line(3, "Finished:", rfc1123(detail["finishedAt"]))
            return
    w.line(2, "State:", "Waiting")


def _describe_containers(pod: Obj, w: Writer) -> None:
    statuses = {s.get("name"): s for s in (pod.get("status") or {}).get("containerStatuses") or []}
    w.line(0, "Containers:")
    for c in (pod.get("spec") or {}).get("containers") or []:
        cs = statuses.get(c.get("name")) or {}
        w.line(1, f"{c.get('name')}:")
        w.line(2, "Image:", c.get("image", ""))
        ports = c.get("ports") or []
        port_text = ", ".join(
            f"{p.get('containerPort')}/{p.get('protocol') or 'TCP'}" for p in ports
        )
        w.line(2, "Port:" if len(ports) <= 1 else "Ports:", port_text or NONE)
        if c.get("command"):
            w.line(2, "Command:", " ".join(c["command"]))
        if c.get("args"):
            w.line(2, "Args:", " ".join(c["args"]))
        _container_state(cs.get("state") or {}, w)
        w.line(2, "Ready:", "True" if cs.get("ready") else "False")
        w.line(2, "Restart Count:", cs.get("restartCount", 0))
        env = c.get("env") or []
        if not env:
            w.line(2, "Environment:", NONE)
        else:
            w.line(2, "Environment:")
            for e in env:
                w.line(3, f"{e.get('name')}:", e.get("value", ""))


def describe_pod(client: ApiClient, pod: Obj, w: Writer, now: float) -> None:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    meta = pod.get("metadata") or {}
    w.line(0, "Name:", meta.get("name", ""))
    w.line(0, "Namespace:", meta.get("namespace", ""))
    node = spec.get("nodeName")
    w.line(0, "Node:", f"{node}/{status.get('hostIP', '')}" if node else NONE)
    if status.get("startTime"):
        w.line(0, "Start Time:", rfc1123(status["startTime"]))
    labels_and_annotations(w, meta)
    w.line(
        0,
        "Status:",
        pod_status(pod)[0] if meta.get("deletionTimestamp") else status.get("phase", "Pending"),
    )
    for key, title in (("reason", "Reason:"), ("message", "Message:")):
        if status.get(key):
            w.line(0, title, status[key])
    w.line(0, "IP:", status.get("podIP", ""))
    ips = status.get("podIPs") or ([{"ip": status["podIP"]}] if status.get("podIP") else [])
    w.line(0, "IPs:", *([] if ips else [NONE]))
    for ip in ips:
        w.line(1, "IP:", ip.get("ip", ""))
    owners = meta.get("ownerReferences") or []
    if owners:
        w.line(0, "Controlled By:", f"{owners[0].get('kind')}/{owners[0].get('name')}")
    _describe_containers(pod, w)
    conditions_table(w, status.get("conditions") or [])


def describe_node(client: ApiClient, node: Obj, w: Writer, now: float) -> None:
    spec, status = node.get("spec") or {}, node.get("status") or {}
    header(w, node, namespaced=False)
    w.line(0, "CreationTimestamp:", rfc1123((node.get("metadata") or {}).get("creationTimestamp")))
    w.line(0, "Unschedulable:", "true" if spec.get("unschedulable") else "false")
    w.line(0, "Status:", node_status(node))
    conditions = status.get("conditions") or []
    if conditions:
        w.line(0, "Conditions:")
        w.line(1, "Type", "Status", "LastHeartbeatTime", "Reason", "Message")
        w.line(1, "----", "------", "-----------------", "------", "-------")
        for c in conditions:
            w.line(
                1,
                c.get("type", ""),
                c.get("status", ""),
                rfc1123(c.get("lastHeartbeatTime")),
                c.get("reason", ""),
                c.get("message", ""),
            )
    w.line(0, "Addresses:")
    for addr in status.get("addresses") or []:
        w.line(1, f"{addr.get('type')}:", addr.get("address", ""))
    w.line(0, "PodCIDR:", spec.get("podCIDR") or NONE)
    w.line(0, "PodCIDRs:", ",".join(spec.get("podCIDRs") or []) or spec.get("podCIDR") or NONE)
    _node_pods(client, node["metadata"]["name"], w, now)


def _node_pods(client: ApiClient, node_name: str, w: Writer, now: float) -> None:
    pods = client.list(resolve_kind("pods"), None, field_selector=f"spec.nodeName={node_name}")
    items = pods.get("items") or []
    w.line(0, "Non-terminated Pods:", f"({len(items)} in total)")
    if items:
        w.line(1, "Namespace", "Name", "Age")
        w.line(1, "---------", "----", "---")
        for p in items:
            m = p.get("metadata") or {}
            w.line(
                1,
                m.get("namespace", ""),
                m.get("name", ""),
                age_of(m.get("creationTimestamp"), now),
            )


def describe_workload(client: ApiClient, obj: Obj, w: Writer, now: float) -> None:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    header(w, obj)
    w.line(0, "CreationTimestamp:", rfc1123((obj.get("metadata") or {}).get("creationTimestamp")))
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    w.line(0, "Selector:", ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or NONE)
    desired, total = spec.get("replicas", 1), status.get("replicas") or 0
    available = status.get("availableReplicas") or 0
    if obj.get("kind") == "Deployment":
        w.line(
            0,
            "Replicas:",
            f"{desired} desired | {status.get('updatedReplicas') or 0} updated | "
            f"{total} total | {available} available | {max(total - available, 0)} unavailable",
        )
        w.line(0, "StrategyType:", (spec.get("strategy") or {}).get("type") or "RollingUpdate")
    else:
        w.line(0, "Replicas:", f"{total} current / {desired} desired")
    template = spec.get("template") or {}
    w.line(0, "Pod Template:")
    map_lines(w, 1, "Labels", (template.get("metadata") or {}).get("labels"), "=")
    w.line(1, "Containers:")
    for c in (template.get("spec") or {}).get("containers") or []:
        w.line(2, f"{c.get('name')}:")
        w.line(3, "Image:", c.get("image", ""))
        ports = ", ".join(
            f"{p.get('containerPort')}/{p.get('protocol') or 'TCP'}" for p in c.get("ports") or []
        )
        w.line(3, "Port:", ports or NONE)
    conditions_table(w, status.get("conditions") or [])


def _selector_text(selector: Any) -> str:
    """metav1.FormatLabelSelector: ``k=v,k2 in (a,b),!k3``, or ``<none>`` when empty."""
    selector = selector if isinstance(selector, dict) else {}
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
        if op in ("In", "NotIn"):
            parts.append(f"{key} {op.lower()} ({','.join(sorted(values))})")
        else:
            parts.append(key if op == "Exists" else f"!{key}")
    return ",".join(parts) or NONE


def _policy_ports(w: Writer, ports: list[Obj]) -> None:
    if not ports:
        w.line(2, "To Port: <any> (traffic allowed to all ports)")
    for port in ports:
        end = f"-{port['endPort']}" if port.get("endPort") else ""
        w.line(2, f"To Port: {port.get('port', '<any>')}{end}/{port.get('protocol') or 'TCP'}")


def _policy_peers(w: Writer, peers: list[Obj], word: str, unrestricted: str) -> None:
    if not peers:
        w.line(2, f"{word}: <any> ({unrestricted})")
    for peer in peers:
        w.line(2, f"{word}:")
        if "namespaceSelector" in peer:
            w.line(3, f"NamespaceSelector: {_selector_text(peer['namespaceSelector'])}")
        if "podSelector" in peer:
            w.line(3, f"PodSelector: {_selector_text(peer['podSelector'])}")
        if "ipBlock" in peer:
            block = peer.get("ipBlock") or {}
            w.line(3, "IPBlock:")
            w.line(4, f"CIDR: {block.get('cidr', '')}")
            w.line(4, f"Except: {', '.join(block.get('except') or [])}")


def _policy_rules(w: Writer, rules: list[Obj], ingress: bool) -> None:
    """kubectl's printNetworkPolicySpecIngressFrom / EgressTo."""
    direction = "ingress" if ingress else "egress"
    if not rules:
        w.line(2, f"<none> (Selected pods are isolated for {direction} connectivity)")
    for i, rule in enumerate(rules):
        _policy_ports(w, rule.get("ports") or [])
        if ingress:
            _policy_peers(w, rule.get("from") or [], "From", "traffic not restricted by source")
        else:
            _policy_peers(w, rule.get("to") or [], "To", "traffic not restricted by destination")
        if i != len(rules) - 1:
            w.line(2, "----------")


def describe_network_policy(client: ApiClient, obj: Obj, w: Writer, now: float) -> None:
    """As kubectl's NetworkPolicyDescriber: what the policy selects and allows, in words."""
    spec, meta = obj.get("spec") or {}, obj.get("metadata") or {}
    w.line(0, "Name:", meta.get("name", ""))
    w.line(0, "Namespace:", meta.get("namespace", ""))
    created = parse_time(meta.get("creationTimestamp"))
    stamp = (
        NONE
        if created is None
        else time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(created))
    )
    w.line(0, "Created on:", stamp)
    labels_and_annotations(w, meta)
    w.line(0, "Spec:")
    selector = _selector_text(spec.get("podSelector"))
    if selector == NONE:
        selector = "<none> (Allowing the specific traffic to all pods in this namespace)"
    w.line(1, f"PodSelector:     {selector}")
    types = spec.get("policyTypes") or ["Ingress", *(["Egress"] if spec.get("egress") else [])]
    for kind, rules in (("Ingress", spec.get("ingress")), ("Egress", spec.get("egress"))):
        if kind in types:
            w.line(1, f"Allowing {kind.lower()} traffic:")
            _policy_rules(w, rules or [], kind == "Ingress")
        else:
            w.line(1, f"Not affecting {kind.lower()} traffic")
    w.line(1, f"Policy Types: {', '.join(types)}")


DESCRIBERS: dict[str, Describer] = {
    "NetworkPolicy": describe_network_policy,
    "Service": describe_service,
    "Pod": describe_pod,
    "Node": describe_node,
    "Deployment": describe_workload,
    "ReplicaSet": describe_workload,
}
