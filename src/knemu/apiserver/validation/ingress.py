"""Ingress and IngressClass validation (networking.k8s.io/v1; upstream
pkg/apis/networking/validation/validation.go ValidateIngress / ValidateIngressClass).

Rules (https://kubernetes.io/docs/concepts/services-networking/ingress/ and the API reference):
an Ingress has a defaultBackend or at least one rule; a rule's host is a DNS-1123 subdomain,
optionally with one leading ``*.`` label, and never an IP address; every HTTP path names a
pathType (Exact, Prefix or ImplementationSpecific) and a path starting with ``/``; Exact and
Prefix paths may not hold ``//``, ``/./``, ``/../``, ``%2f`` or end in ``/.`` or ``/..``
(validateIngressPath's invalidPathSequences); a backend is a service (name, and a port by
number or by name, never both) or a resource, not both.  An IngressClass names its controller
as a domain-prefixed path, which cannot change afterwards.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from knemu.apiserver.meta import naming
from knemu.apiserver.validation.common import (
    Obj,
    as_list,
    as_map,
    check_metadata,
    check_name,
    check_port,
    forbidden,
    invalid,
    not_supported,
    required,
)
from knemu.errors import FieldError

PATH_TYPES = ("Exact", "Prefix", "ImplementationSpecific")
_BAD_SEQUENCES = ("//", "/./", "/../", "%2f", "%2F")
_BAD_SUFFIXES = ("/..", "/.")
_CONTROLLER = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9/_.~%!$&'()*+,;=:@-]+$")
MAX_CONTROLLER_LEN = 250
SCOPES = ("Cluster", "Namespace")


def validate_ingress(obj: Obj) -> list[FieldError]:
    errs = check_metadata(obj, naming.dns1123_subdomain)
    spec = as_map(obj.get("spec"))
    class_name = spec.get("ingressClassName")
    if class_name is not None:
        errs += check_name("spec.ingressClassName", class_name, naming.dns1123_subdomain)
    rules = as_list(spec.get("rules"))
    if spec.get("defaultBackend") is None and not rules:
        detail = "either `defaultBackend` or `rules` must be specified"
        errs.append(invalid("spec", dict(spec), detail))
    if spec.get("defaultBackend") is not None:
        errs += _backend("spec.defaultBackend", spec["defaultBackend"])
    for i, rule in enumerate(rules):
        errs += _rule(f"spec.rules[{i}]", as_map(rule))
    for i, tls in enumerate(as_list(spec.get("tls"))):
        tls = as_map(tls)
        for j, host in enumerate(as_list(tls.get("hosts"))):
            errs += _host(f"spec.tls[{i}].hosts[{j}]", host)
        if tls.get("secretName"):
            errs += check_name(f"spec.tls[{i}].secretName", tls["secretName"],
                               naming.dns1123_subdomain)  # fmt: skip
    return errs


def _rule(path: str, rule: Any) -> list[FieldError]:
    errs = [] if not rule.get("host") else _host(f"{path}.host", rule["host"])
    if rule.get("http") is None:
        return errs
    paths = as_list(as_map(rule["http"]).get("paths"))
    if not paths:
        errs.append(required(f"{path}.http.paths"))
    for i, entry in enumerate(paths):
        errs += _http_path(f"{path}.http.paths[{i}]", as_map(entry))
    return errs


def _host(path: str, host: Any) -> list[FieldError]:
    if not isinstance(host, str) or not host:
        return [required(path)]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return [invalid(path, host, "must be a DNS name, not an IP address")]
    name = host[2:] if host.startswith("*.") else host
    return [invalid(path, host, e) for e in naming.dns1123_subdomain(name)]


def _http_path(path: str, entry: Any) -> list[FieldError]:
    errs: list[FieldError] = []
    kind, value = entry.get("pathType"), entry.get("path", "")
    if kind is None:
        errs.append(required(f"{path}.pathType", "pathType must be specified"))
    elif kind not in PATH_TYPES:
        errs.append(not_supported(f"{path}.pathType", kind, PATH_TYPES))
    if not isinstance(value, str):
        errs.append(invalid(f"{path}.path", value, "must be a string"))
    elif (value and not value.startswith("/")) or (kind in ("Exact", "Prefix") and not value):
        errs.append(invalid(f"{path}.path", value, "must be an absolute path"))
    elif kind in ("Exact", "Prefix"):
        bad = [s for s in _BAD_SEQUENCES if s in value]
        bad += [s for s in _BAD_SUFFIXES if value.endswith(s)]
        errs += [invalid(f"{path}.path", value, f"must not contain '{s}'") for s in bad]
    if entry.get("backend") is None:
        errs.append(required(f"{path}.backend"))
    else:
        errs += _backend(f"{path}.backend", entry["backend"])
    return errs


def _backend(path: str, backend: Any) -> list[FieldError]:
    backend = as_map(backend)
    service, resource = backend.get("service"), backend.get("resource")
    if service is not None and resource is not None:
        return [invalid(path, dict(backend), "cannot set both service and resource backends")]
    if resource is not None:
        res = as_map(resource)
        return [required(f"{path}.resource.{k}") for k in ("kind", "name") if not res.get(k)]
    if service is None:
        return [required(path, "a service or a resource backend")]
    service = as_map(service)
    errs = check_name(f"{path}.service.name", service.get("name"), naming.dns1035_label)
    port = as_map(service.get("port"))
    name, number = port.get("name"), port.get("number")
    if name and number:
        detail = "cannot set both port name & port number"
        errs.append(invalid(f"{path}.service.port", dict(port), detail))
    elif name:
        errs += check_name(f"{path}.service.port.name", name, naming.iana_svc_name)
    elif number is not None:
        errs += check_port(f"{path}.service.port.number", number)
    else:
        errs.append(required(f"{path}.service.port", "port name or number is required"))
    return errs


def validate_ingress_class(obj: Obj) -> list[FieldError]:
    errs = check_metadata(obj, naming.dns1123_subdomain)
    spec = as_map(obj.get("spec"))
    controller = spec.get("controller")
    if not isinstance(controller, str) or not controller:
        errs.append(required("spec.controller"))
    elif len(controller) > MAX_CONTROLLER_LEN:
        detail = f"must be no more than {MAX_CONTROLLER_LEN} characters"
        errs.append(invalid("spec.controller", controller, detail))
    elif not _CONTROLLER.match(controller):
        detail = 'must be a domain-prefixed path (such as "acme.io/foo")'
        errs.append(invalid("spec.controller", controller, detail))
    params = spec.get("parameters")
    if params is not None:
        params = as_map(params)
        errs += [required(f"spec.parameters.{k}") for k in ("kind", "name") if not params.get(k)]
        scope = params.get("scope", "Cluster")
        if scope not in SCOPES:
            errs.append(not_supported("spec.parameters.scope", scope, SCOPES))
        elif scope == "Namespace" and not params.get("namespace"):
            errs.append(required("spec.parameters.namespace", "`parameters.scope` is Namespace"))
        elif scope == "Cluster" and params.get("namespace"):
            errs.append(forbidden("spec.parameters.namespace", "`parameters.scope` is Cluster"))
    return errs


def validate_ingress_class_update(old: Obj, new: Obj) -> list[FieldError]:
    before = as_map(old.get("spec")).get("controller")
    after = as_map(new.get("spec")).get("controller")
    if before != after:
        return [invalid("spec.controller", after, "field is immutable")]
    return []


_BACKEND = {
    "service": {"name": "str", "port": {"name": "str", "number": "int32"}},
    "resource": {"apiGroup": "str", "kind": "str", "name": "str"},
}
_LB_STATUS = {
    "ingress": [
        {
            "ip": "str",
            "hostname": "str",
            "ports": [{"port": "int32", "protocol": "str", "error": "str"}],
        }
    ]
}
SHAPES: dict[str, Any] = {
    "Ingress": {
        "spec": {
            "ingressClassName": "str",
            "defaultBackend": _BACKEND,
            "tls": [{"hosts": ["str"], "secretName": "str"}],
            "rules": [
                {
                    "host": "str",
                    "http": {"paths": [{"path": "str", "pathType": "str", "backend": _BACKEND}]},
                }
            ],
        },
        "status": {"loadBalancer": _LB_STATUS},
    },
    "IngressClass": {
        "spec": {
            "controller": "str",
            "parameters": {
                "apiGroup": "str",
                "kind": "str",
                "name": "str",
                "scope": "str",
                "namespace": "str",
            },
        }
    },
}
API_VERSIONS = {"Ingress": "networking.k8s.io/v1", "IngressClass": "networking.k8s.io/v1"}
SHORT_NAMES = {"ing": "Ingress"}
VALIDATORS = {"Ingress": validate_ingress, "IngressClass": validate_ingress_class}
UPDATE_VALIDATORS = {"IngressClass": validate_ingress_class_update}
