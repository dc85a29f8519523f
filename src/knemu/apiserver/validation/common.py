"""Validation of objects, rejecting what Kubernetes rejects, with Kubernetes' field paths.

Errors are ``errors.FieldError(path, message, type)`` worded like
apimachinery/pkg/util/validation/field (``spec.ports[0].port: Invalid value: 70000: must be
between 1 and 65535, inclusive``).  The per-kind rules live in pod.py,
service.py, apps.py and netpol.py of this package; this module holds the
shared helpers, metadata rules (pkg/apis/core/validation ValidateObjectMeta) and the dispatch
table.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeGuard

from knemu.apiserver.meta import naming
from knemu.errors import FieldError

Obj = dict[str, Any]


# ---- field.Error constructors ----------------------------------------------------------------


def show(value: Any) -> str:
    """Render a value the way field.Invalid prints it: strings quoted, numbers bare."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def invalid(path: str, value: Any, detail: str) -> FieldError:
    return FieldError(path, f"Invalid value: {show(value)}: {detail}", "FieldValueInvalid")


def required(path: str, detail: str = "") -> FieldError:
    msg = "Required value" + (f": {detail}" if detail else "")
    return FieldError(path, msg, "FieldValueRequired")


def duplicate(path: str, value: Any) -> FieldError:
    return FieldError(path, f"Duplicate value: {show(value)}", "FieldValueDuplicate")


def not_supported(path: str, value: Any, supported: Iterable[str]) -> FieldError:
    allowed = ", ".join(json.dumps(s) for s in sorted(supported))
    return FieldError(
        path,
        f"Unsupported value: {show(value)}: supported values: {allowed}",
        "FieldValueNotSupported",
    )


def forbidden(path: str, detail: str) -> FieldError:
    return FieldError(path, f"Forbidden: {detail}", "FieldValueForbidden")


def check_name(path: str, value: Any, checker: Callable[[str], list[str]]) -> list[FieldError]:
    if not isinstance(value, str) or value == "":
        return [required(path)]
    return [invalid(path, value, e) for e in checker(value)]


def is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def check_port(path: str, value: Any) -> list[FieldError]:
    if not is_int(value) or not 1 <= value <= 65535:
        return [invalid(path, value, "must be between 1 and 65535, inclusive")]
    return []


def check_protocol(path: str, value: Any) -> list[FieldError]:
    if value not in ("TCP", "UDP", "SCTP"):
        return [not_supported(path, value, ("TCP", "UDP", "SCTP"))]
    return []


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


# ---- metadata ----------------------------------------------------------------------------


def check_labels(path: str, labels: Any) -> list[FieldError]:
    if labels is None:
        return []
    if not isinstance(labels, Mapping):
        return [invalid(path, labels, "must be a map of string keys to string values")]
    errs: list[FieldError] = []
    for key, value in labels.items():
        errs += [invalid(path, key, e) for e in naming.qualified_name(str(key))]
        if not isinstance(value, str):
            errs.append(invalid(f"{path}.{key}", value, "label values must be strings"))
            continue
        errs += [invalid(path, value, e) for e in naming.label_value(value)]
    return errs


def check_annotations(path: str, annotations: Any) -> list[FieldError]:
    if annotations is None:
        return []
    if not isinstance(annotations, Mapping):
        return [invalid(path, annotations, "must be a map of string keys to string values")]
    errs: list[FieldError] = []
    total = 0
    for key, value in annotations.items():
        errs += [invalid(path, key, e) for e in naming.qualified_name(str(key))]
        if not isinstance(value, str):
            errs.append(invalid(f"{path}.{key}", value, "annotation values must be strings"))
            continue
        total += len(key) + len(value)
    if total > 256 * 1024:  # apimachinery TotalAnnotationSizeLimitB
        errs.append(
            FieldError(path, "Too long: must have at most 262144 bytes", "FieldValueTooLong")
        )
    return errs


def check_metadata(obj: Obj, name_checker: Callable[[str], list[str]]) -> list[FieldError]:
    meta = as_map(obj.get("metadata"))
    errs = check_name("metadata.name", meta.get("name"), name_checker)
    errs += check_labels("metadata.labels", meta.get("labels"))
    errs += check_annotations("metadata.annotations", meta.get("annotations"))
    return errs


# ---- kinds without a module of their own -------------------------------------------------


def validate_namespace(obj: Obj) -> list[FieldError]:
    return check_metadata(obj, naming.dns1123_label)


def validate_node(obj: Obj) -> list[FieldError]:
    return check_metadata(obj, naming.dns1123_subdomain)


def validate_event(obj: Obj) -> list[FieldError]:
    errs = check_metadata(obj, naming.dns1123_subdomain)
    involved = as_map(obj.get("involvedObject"))
    if not involved.get("kind") or not involved.get("name"):
        errs.append(required("involvedObject", "kind and name of the object the event is about"))
    if obj.get("type") not in (None, "Normal", "Warning"):
        errs.append(not_supported("type", obj.get("type"), ("Normal", "Warning")))
    return errs


def validate_endpoints(obj: Obj) -> list[FieldError]:
    errs = check_metadata(obj, naming.dns1123_subdomain)
    for i, subset in enumerate(as_list(obj.get("subsets"))):
        base = f"subsets[{i}]"
        for key in ("addresses", "notReadyAddresses"):
            for j, addr in enumerate(as_list(as_map(subset).get(key))):
                if not as_map(addr).get("ip"):
                    errs.append(required(f"{base}.{key}[{j}].ip"))
        for j, port in enumerate(as_list(as_map(subset).get("ports"))):
            port = as_map(port)
            errs += check_port(f"{base}.ports[{j}].port", port.get("port"))
            errs += check_protocol(f"{base}.ports[{j}].protocol", port.get("protocol"))
    return errs


def validate_endpoint_slice(obj: Obj) -> list[FieldError]:
    errs = check_metadata(obj, naming.dns1123_subdomain)
    if obj.get("addressType") not in ("IPv4", "IPv6", "FQDN"):
        errs.append(not_supported("addressType", obj.get("addressType"), ("IPv4", "IPv6", "FQDN")))
    for i, ep in enumerate(as_list(obj.get("endpoints"))):
        addrs = as_list(as_map(ep).get("addresses"))
        if not 1 <= len(addrs) <= 100:
            errs.append(invalid(f"endpoints[{i}].addresses", addrs, "must have 1 to 100 items"))
    for i, port in enumerate(as_list(obj.get("ports"))):
        port = as_map(port)
        if port.get("port") is not None:
            errs += check_port(f"ports[{i}].port", port.get("port"))
        errs += check_protocol(f"ports[{i}].protocol", port.get("protocol"))
    return errs
