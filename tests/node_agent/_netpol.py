"""Helpers for the NetworkPolicy tests: objects written as Kubernetes YAML, converted exactly as
the api-server converts them for the watch (``knemu.apiserver.grpc_api.convert``)."""

from __future__ import annotations

from typing import Any

import yaml

from knemu.apiserver.grpc_api import convert
from knemu.node_agent.policy.engine import PolicyEngine
from knemu.proto import knemu_pb2 as pb, wire

NODE = "node-1"
GW = "10.244.1.1"


def ip(text: str) -> bytes:
    return wire.ip_to_bytes(text)


def pod(
    name: str,
    pod_ip: str,
    labels: dict[str, str] | None = None,
    namespace: str = "default",
    node: str = NODE,
    ports: list[dict[str, Any]] | None = None,
) -> pb.Pod:
    return convert.pod_to_proto({
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x",
                                                   "ports": ports or []}]},
        "status": {"phase": "Running", "podIP": pod_ip},
    })  # fmt: skip


def namespace(name: str, labels: dict[str, str] | None = None) -> pb.Namespace:
    return convert.namespace_to_proto({"metadata": {"name": name, "labels": labels or {}}})


def policy(text: str) -> pb.NetworkPolicy:
    """A NetworkPolicy from YAML (metadata.namespace defaults to "default")."""
    obj = yaml.safe_load(text)
    obj.setdefault("metadata", {}).setdefault("namespace", "default")
    return convert.network_policy_to_proto(obj)


def engine(*objects: Any) -> PolicyEngine:
    e = PolicyEngine(NODE, dns_ip=GW)
    feed(e, *objects)
    return e


def feed(e: PolicyEngine, *objects: Any) -> None:
    for obj in objects:
        if isinstance(obj, pb.Pod):
            e.set_pod(obj)
        elif isinstance(obj, pb.Namespace):
            e.set_namespace(obj)
        else:
            e.set_policy(obj)


DENY_INGRESS = """
metadata: {name: deny-ingress}
spec:
  podSelector: {}
  policyTypes: [Ingress]
"""
DENY_EGRESS = """
metadata: {name: deny-egress}
spec:
  podSelector: {}
  policyTypes: [Egress]
"""
