"""Service validation (pkg/apis/core/validation/validation.go ValidateService).

Rules from https://kubernetes.io/docs/concepts/services-networking/service/: the name is a
DNS-1035 label; a multi-port Service names every port, uniquely; targetPort is a port number
or an IANA_SVC_NAME naming a container port; nodePort only for NodePort/LoadBalancer;
ExternalName needs spec.externalName and no clusterIP; headless (clusterIP: None) only for
type ClusterIP; sessionAffinity ClientIP timeouts lie in (0, 86400].  The nodePort range and
clusterIP conflicts are checked during allocation (knemu.apiserver.ipam).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from knemu.apiserver.meta import naming
from knemu.apiserver.validation.common import (
    Obj,
    as_list,
    as_map,
    check_labels,
    check_metadata,
    check_port,
    check_protocol,
    duplicate,
    forbidden,
    invalid,
    is_int,
    not_supported,
    required,
)
from knemu.errors import FieldError

SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
MAX_AFFINITY_TIMEOUT_S = 86400  # core/v1 MaxClientIPServiceAffinitySeconds


def is_ip(value: Any) -> bool:
    try:
        ipaddress.ip_address(str(value))
    except ValueError:
        return False
    return True


def _target_port(path: str, value: Any) -> list[FieldError]:
    if is_int(value):
        return check_port(path, value)
    if isinstance(value, str) and value:
        return [invalid(path, value, e) for e in naming.iana_svc_name(value)]
    return [invalid(path, value, "must be a port number (1-65535) or an IANA_SVC_NAME")]


def _port(path: str, port: Any, stype: str) -> list[FieldError]:
    port = as_map(port)
    errs = check_port(f"{path}.port", port.get("port"))
    errs += check_protocol(f"{path}.protocol", port.get("protocol"))
    errs += _target_port(f"{path}.targetPort", port.get("targetPort"))
    node_port = port.get("nodePort")
    if node_port not in (None, 0):
        if stype in ("ClusterIP", "ExternalName"):
            errs.append(forbidden(f"{path}.nodePort", f"may not be used when `type` is '{stype}'"))
        elif not is_int(node_port):
            errs.append(invalid(f"{path}.nodePort", node_port, "must be a port number"))
    return errs


def _ports(spec: Any, stype: str, headless: bool) -> list[FieldError]:
    ports = as_list(spec.get("ports"))
    if not ports and not headless and stype != "ExternalName":
        return [required("spec.ports", "a Service needs at least one port")]
    errs: list[FieldError] = []
    names: set[str] = set()
    keys: set[tuple[Any, Any]] = set()
    for i, port in enumerate(ports):
        path = f"spec.ports[{i}]"
        errs += _port(path, port, stype)
        port = as_map(port)
        name = port.get("name")
        if len(ports) > 1 and not name:
            errs.append(required(f"{path}.name", "every port of a multi-port Service needs a name"))
        elif name:
            errs += [invalid(f"{path}.name", name, e) for e in naming.dns1123_label(str(name))]
            if name in names:
                errs.append(duplicate(f"{path}.name", name))
            names.add(str(name))
        key = (port.get("port"), port.get("protocol"))
        if key in keys:
            errs.append(duplicate(path, {"port": key[0], "protocol": key[1]}))
        keys.add(key)
    return errs


def _cluster_ip(spec: Any, stype: str) -> list[FieldError]:
    cip = spec.get("clusterIP")
    if stype == "ExternalName":
        if cip not in (None, ""):
            return [forbidden("spec.clusterIP", "may not be set for ExternalName services")]
        return []
    if cip in (None, "", "None"):
        if cip == "None" and stype != "ClusterIP":
            return [
                invalid("spec.clusterIP", cip, f"may not be set to 'None' for {stype} services")
            ]
        return []
    if not is_ip(cip):
        return [invalid("spec.clusterIP", cip, "must be empty, 'None', or a valid IP address")]
    return []


def _external_name(spec: Any, stype: str) -> list[FieldError]:
    name = spec.get("externalName")
    if stype != "ExternalName":
        return []
    if not name:
        return [
            required("spec.externalName", "an ExternalName Service names the DNS name to alias")
        ]
    return [
        invalid("spec.externalName", name, e)
        for e in naming.dns1123_subdomain(str(name).rstrip("."))
    ]


def _affinity(spec: Any) -> list[FieldError]:
    affinity = spec.get("sessionAffinity")
    if affinity not in ("None", "ClientIP"):
        return [not_supported("spec.sessionAffinity", affinity, ("ClientIP", "None"))]
    config = spec.get("sessionAffinityConfig")
    if affinity == "None":
        if config:
            return [
                invalid(
                    "spec.sessionAffinityConfig",
                    config,
                    "must not be set when session affinity is None",
                )
            ]
        return []
    timeout = as_map(as_map(config).get("clientIP")).get("timeoutSeconds")
    if not is_int(timeout) or not 0 < timeout <= MAX_AFFINITY_TIMEOUT_S:
        path = "spec.sessionAffinityConfig.clientIP.timeoutSeconds"
        return [
            invalid(path, timeout, f"must be greater than 0 and less than {MAX_AFFINITY_TIMEOUT_S}")
        ]
    return []


def _policies(spec: Any, stype: str) -> list[FieldError]:
    errs: list[FieldError] = []
    etp = spec.get("externalTrafficPolicy")
    if etp not in (None, ""):
        if stype not in ("NodePort", "LoadBalancer"):
            errs.append(
                invalid(
                    "spec.externalTrafficPolicy",
                    etp,
                    "may only be set when `type` is 'NodePort' or 'LoadBalancer'",
                )
            )
        elif etp not in ("Cluster", "Local"):
            errs.append(not_supported("spec.externalTrafficPolicy", etp, ("Cluster", "Local")))
    for i, cidr in enumerate(as_list(spec.get("loadBalancerSourceRanges"))):
        try:
            ipaddress.ip_network(str(cidr).strip(), strict=False)
        except ValueError:
            path = f"spec.loadBalancerSourceRanges[{i}]"
            errs.append(invalid(path, cidr, "must be a list of IP ranges, e.g. 10.0.0.0/8"))
    hc = spec.get("healthCheckNodePort")
    if hc not in (None, 0) and not (is_int(hc) and 0 < hc < 65536):
        errs.append(invalid("spec.healthCheckNodePort", hc, "must be a port number"))
    itp = spec.get("internalTrafficPolicy")
    if itp not in (None, "", "Cluster", "Local"):
        errs.append(not_supported("spec.internalTrafficPolicy", itp, ("Cluster", "Local")))
    for i, ip in enumerate(as_list(spec.get("externalIPs"))):
        if not is_ip(ip):
            errs.append(invalid(f"spec.externalIPs[{i}]", ip, "must be a valid IP address"))
    return errs


def validate_service(obj: Obj) -> list[FieldError]:
    errs = check_metadata(obj, naming.dns1035_label)
    spec = as_map(obj.get("spec"))
    stype = spec.get("type")
    if stype not in SERVICE_TYPES:
        return [*errs, not_supported("spec.type", stype, SERVICE_TYPES)]
    headless = spec.get("clusterIP") == "None"
    errs += _cluster_ip(spec, stype)
    errs += _external_name(spec, stype)
    errs += _ports(spec, stype, headless)
    errs += _affinity(spec)
    errs += _policies(spec, stype)
    errs += check_labels("spec.selector", spec.get("selector"))
    return errs


def validate_service_update(old: Obj, new: Obj) -> list[FieldError]:
    """spec.clusterIP may not change once set, except to or from ExternalName."""
    old_spec, new_spec = as_map(old.get("spec")), as_map(new.get("spec"))
    if "ExternalName" in (old_spec.get("type"), new_spec.get("type")):
        return []
    old_ip, new_ip = old_spec.get("clusterIP"), new_spec.get("clusterIP")
    if old_ip not in (None, "") and new_ip != old_ip:
        return [
            invalid(
                "spec.clusterIP",
                new_ip,
                f"field is immutable (it is {old_ip}); delete the Service and create it again "
                "to change its ClusterIP",
            )
        ]
    return []
