"""NetworkPolicy validation (pkg/apis/networking/validation/validation.go ValidateNetworkPolicy).

Rules from https://kubernetes.io/docs/concepts/services-networking/network-policies/ and the
API reference (networking.k8s.io/v1): spec.podSelector is required ({} selects every pod of the
namespace); label selectors follow apimachinery's ValidateLabelSelector (In/NotIn need values,
Exists/DoesNotExist take none); a peer sets podSelector and/or namespaceSelector, or ipBlock
alone; ipBlock.except entries must be strict subsets of ipBlock.cidr; a port is a number
1-65535 or an IANA_SVC_NAME, endPort only with a numeric port and not below it; policyTypes
are Ingress and/or Egress.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from knemu.apiserver.meta import naming
from knemu.apiserver.validation.common import (
    Obj,
    as_list,
    check_labels,
    check_metadata,
    check_port,
    check_protocol,
    forbidden,
    invalid,
    is_int,
    not_supported,
    required,
)
from knemu.errors import FieldError

POLICY_TYPES = ("Ingress", "Egress")
SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def validate_network_policy(obj: Obj) -> list[FieldError]:
    errs = check_metadata(obj, naming.dns1123_subdomain)
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        return [*errs, required("spec", "a NetworkPolicy needs spec.podSelector at least")]
    if not isinstance(spec.get("podSelector"), Mapping):
        errs.append(required("spec.podSelector", "use {} to select every pod in the namespace"))
    else:
        errs += check_label_selector("spec.podSelector", spec["podSelector"])
    errs += _policy_types(spec.get("policyTypes"))
    for direction, peers_key in (("ingress", "from"), ("egress", "to")):
        errs += _rules(f"spec.{direction}", spec.get(direction), peers_key)
    return errs


def _policy_types(value: Any) -> list[FieldError]:
    if value is None:
        return []
    if not isinstance(value, list):
        return [invalid("spec.policyTypes", value, "must be a list of Ingress and/or Egress")]
    if len(value) > len(POLICY_TYPES):
        return [invalid("spec.policyTypes", value, "may not specify more than two policyTypes")]
    return [
        not_supported(f"spec.policyTypes[{i}]", ptype, POLICY_TYPES)
        for i, ptype in enumerate(value)
        if ptype not in POLICY_TYPES
    ]


def _rules(path: str, rules: Any, peers_key: str) -> list[FieldError]:
    if rules is not None and not isinstance(rules, list):
        return [invalid(path, rules, "must be a list of rules")]
    errs: list[FieldError] = []
    for i, rule in enumerate(as_list(rules)):
        base = f"{path}[{i}]"
        if not isinstance(rule, Mapping):
            errs.append(invalid(base, rule, "must be an object with ports and/or " + peers_key))
            continue
        for j, port in enumerate(as_list(rule.get("ports"))):
            errs += check_netpol_port(f"{base}.ports[{j}]", port)
        for j, peer in enumerate(as_list(rule.get(peers_key))):
            errs += check_peer(f"{base}.{peers_key}[{j}]", peer)
    return errs


# ---- pieces, each with its field path ---------------------------------------------------------


def check_label_selector(path: str, selector: Any) -> list[FieldError]:
    """metav1.LabelSelector (apimachinery ValidateLabelSelector)."""
    if not isinstance(selector, Mapping):
        return [invalid(path, selector, "must be a label selector (matchLabels/matchExpressions)")]
    errs = check_labels(f"{path}.matchLabels", selector.get("matchLabels"))
    for i, expr in enumerate(as_list(selector.get("matchExpressions"))):
        base = f"{path}.matchExpressions[{i}]"
        expr = expr if isinstance(expr, Mapping) else {}
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values")
        if not isinstance(key, str) or not key:
            errs.append(required(f"{base}.key"))
        else:
            errs += [invalid(f"{base}.key", key, e) for e in naming.qualified_name(key)]
        if op not in SELECTOR_OPERATORS:
            errs.append(not_supported(f"{base}.operator", op, SELECTOR_OPERATORS))
        elif op in ("In", "NotIn") and not as_list(values):
            errs.append(
                required(f"{base}.values", "must be specified when `operator` is 'In' or 'NotIn'")
            )
        elif op in ("Exists", "DoesNotExist") and as_list(values):
            errs.append(
                forbidden(
                    f"{base}.values",
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                )
            )
        for j, value in enumerate(as_list(values)):
            if not isinstance(value, str):
                errs.append(invalid(f"{base}.values[{j}]", value, "must be a string"))
            else:
                errs += [
                    invalid(f"{base}.values[{j}]", value, e) for e in naming.label_value(value)
                ]
    return errs


def check_peer(path: str, peer: Any) -> list[FieldError]:
    """NetworkPolicyPeer: selectors (ANDed when both are set) or an ipBlock on its own."""
    if not isinstance(peer, Mapping):
        return [
            invalid(path, peer, "must be an object with podSelector, namespaceSelector or ipBlock")
        ]
    present = [
        k for k in ("podSelector", "namespaceSelector", "ipBlock") if peer.get(k) is not None
    ]
    if not present:
        return [required(path, "must specify a peer: podSelector, namespaceSelector or ipBlock")]
    if "ipBlock" in present and len(present) > 1:
        return [forbidden(path, "may not specify both ipBlock and another peer")]
    errs: list[FieldError] = []
    for key in ("podSelector", "namespaceSelector"):
        if key in present:
            errs += check_label_selector(f"{path}.{key}", peer[key])
    if "ipBlock" in present:
        errs += check_ip_block(f"{path}.ipBlock", peer["ipBlock"])
    return errs


def _network(value: Any) -> IPNetwork | None:
    # Kubernetes parses with ParseCIDRSloppy: host bits may be set ("10.0.0.1/8" is accepted).
    if not isinstance(value, str):
        return None
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        return None


def check_ip_block(path: str, block: Any) -> list[FieldError]:
    """IPBlock: a valid cidr; each except a valid CIDR strictly inside it."""
    if not isinstance(block, Mapping):
        return [invalid(path, block, "must be an object with cidr and optional except")]
    cidr = block.get("cidr")
    if cidr in (None, ""):
        return [required(f"{path}.cidr", "e.g. 10.0.0.0/8")]
    net = _network(cidr)
    if net is None:
        return [
            invalid(
                f"{path}.cidr",
                cidr,
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            )
        ]
    errs: list[FieldError] = []
    for i, text in enumerate(as_list(block.get("except"))):
        sub = _network(text)
        where = f"{path}.except[{i}]"
        if sub is None:
            errs.append(invalid(where, text, "must be a valid CIDR value, (e.g. 10.9.8.0/24)"))
        elif sub.version != net.version or not (
            sub.network_address in net and sub.prefixlen > net.prefixlen
        ):
            errs.append(invalid(where, text, "must be a strict subset of `cidr`"))
    return errs


def check_netpol_port(path: str, port: Any) -> list[FieldError]:
    """NetworkPolicyPort: protocol, port (number or IANA_SVC_NAME), endPort."""
    if not isinstance(port, Mapping):
        return [invalid(path, port, "must be an object with protocol, port and endPort")]
    errs: list[FieldError] = []
    if port.get("protocol") is not None:
        errs += check_protocol(f"{path}.protocol", port["protocol"])
    number, end = port.get("port"), port.get("endPort")
    if number is None:
        if end is not None:
            errs.append(
                invalid(f"{path}.endPort", end, "may not be specified when `port` is not specified")
            )
    elif is_int(number):
        errs += check_port(f"{path}.port", number)
        if end is not None:
            if not is_int(end) or not 1 <= end <= 65535:
                errs.append(
                    invalid(f"{path}.endPort", end, "must be between 1 and 65535, inclusive")
                )
            elif end < number:
                errs.append(
                    invalid(f"{path}.endPort", end, "must be greater than or equal to `port`")
                )
    elif isinstance(number, str) and number:
        errs += [invalid(f"{path}.port", number, e) for e in naming.iana_svc_name(number)]
        if end is not None:
            errs.append(
                invalid(f"{path}.endPort", end, "may not be specified when `port` is non-numeric")
            )
    else:
        errs.append(
            invalid(
                f"{path}.port",
                number,
                "must be a port number (1-65535) or an IANA_SVC_NAME naming a container port",
            )
        )
    return errs
