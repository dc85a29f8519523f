"""NetworkPolicy and Namespace (networking.k8s.io/v1, core/v1) -> protobuf, for the watch.

Part of ``knemu.apiserver.grpc_api.convert``; pure and total like the rest of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from knemu.apiserver.grpc_api.fields import (
    field_list as _list,
    field_map as _map,
    field_str as _str,
    field_str_map as _str_map,
    field_strs as _strs,
    field_u32 as _u32,
    meta_to_proto,
    port_string as _port_string,
)
from knemu.proto import knemu_pb2 as pb

# ---- NetworkPolicy -------------------------------------------------------------------------


# Presence matters here: an absent podSelector/namespaceSelector/ipBlock differs from an
# empty one (networking.k8s.io/v1 NetworkPolicyPeer), so optional fields are set only when the
# object has a mapping there (proto3 message fields keep that presence).


def _label_selector_to_proto(value: Any) -> pb.LabelSelector:
    src = _map(value)
    expressions = [
        pb.LabelSelectorRequirement(
            key=_str(e.get("key")), operator=_str(e.get("operator")), values=_strs(e.get("values"))
        )
        for e in map(_map, _list(src.get("matchExpressions")))
    ]
    return pb.LabelSelector(
        match_labels=_str_map(src.get("matchLabels")), match_expressions=expressions
    )


def _netpol_peer_to_proto(value: Any) -> pb.NetworkPolicyPeer:
    src = _map(value)
    peer = pb.NetworkPolicyPeer()
    if isinstance(src.get("podSelector"), Mapping):
        peer.pod_selector.CopyFrom(_label_selector_to_proto(src["podSelector"]))
    if isinstance(src.get("namespaceSelector"), Mapping):
        peer.namespace_selector.CopyFrom(_label_selector_to_proto(src["namespaceSelector"]))
    if isinstance(src.get("ipBlock"), Mapping):
        block = src["ipBlock"]
        peer.ip_block.CopyFrom(
            pb.IPBlock(cidr=_str(block.get("cidr")), except_cidrs=_strs(block.get("except")))
        )
    return peer


def _netpol_ports_to_proto(value: Any) -> list[pb.NetworkPolicyPort]:
    return [
        pb.NetworkPolicyPort(
            protocol=_str(p.get("protocol")),
            port=_port_string(p.get("port")),
            end_port=_u32(p.get("endPort")),
        )
        for p in map(_map, _list(value))
    ]


def network_policy_to_proto(obj: Mapping[str, Any]) -> pb.NetworkPolicy:
    spec = _map(obj.get("spec"))
    ingress = [
        pb.NetworkPolicyIngressRule(
            ports=_netpol_ports_to_proto(r.get("ports")),
            from_peers=[_netpol_peer_to_proto(p) for p in _list(r.get("from"))],
        )
        for r in map(_map, _list(spec.get("ingress")))
    ]
    egress = [
        pb.NetworkPolicyEgressRule(
            ports=_netpol_ports_to_proto(r.get("ports")),
            to_peers=[_netpol_peer_to_proto(p) for p in _list(r.get("to"))],
        )
        for r in map(_map, _list(spec.get("egress")))
    ]
    policy = pb.NetworkPolicy(
        metadata=meta_to_proto(obj),
        ingress=ingress,
        egress=egress,
        policy_types=_strs(spec.get("policyTypes")),
    )
    if isinstance(spec.get("podSelector"), Mapping):
        policy.pod_selector.CopyFrom(_label_selector_to_proto(spec["podSelector"]))
    return policy


# ---- Namespace -----------------------------------------------------------------------------


def namespace_to_proto(obj: Mapping[str, Any]) -> pb.Namespace:
    return pb.Namespace(metadata=meta_to_proto(obj))
