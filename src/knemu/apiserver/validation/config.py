"""ConfigMap, Secret, ServiceAccount, Lease and ReplicationController: validation (their
defaults are ``admission/config_defaults.py``).

Rules and messages of pkg/apis/core/validation (ValidateConfigMap, ValidateSecret,
ValidateServiceAccount, ValidateReplicationController) and pkg/apis/coordination/validation
(ValidateLease).  A Secret's ``stringData`` is merged into ``data`` (base64) on write and never
stored, as the api-server's conversion does; ``type`` defaults to Opaque.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from knemu.apiserver.meta import naming
from knemu.apiserver.validation.common import (
    Obj,
    as_map,
    check_labels,
    check_metadata,
    invalid,
    is_int,
    required,
)
from knemu.apiserver.validation.pod import validate_pod_spec
from knemu.errors import FieldError

_CONFIG_KEY = re.compile(r"[-._a-zA-Z0-9]+")
MAX_SIZE_BYTES = 1024 * 1024  # ConfigMap and Secret: 1 MiB of data in total
_TYPE_KEYS = {  # Secret types whose data must carry these keys
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
}


def _config_key(path: str, key: str) -> list[FieldError]:
    if len(key) > 253:
        return [invalid(path, key, "must be no more than 253 characters")]
    if not _CONFIG_KEY.fullmatch(key):
        return [invalid(path, key, "a valid config key must consist of alphanumeric "
                        "characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or "
                        "'key-name', regex used for validation is '[-._a-zA-Z0-9]+')")]  # fmt: skip
    if key in (".", ".."):
        return [invalid(path, key, f"must not be '{key}'")]
    return []


def _string_map(path: str, value: Any, base64_values: bool) -> tuple[list[FieldError], int]:
    """Errors of a key -> string map, and its size in bytes (decoded)."""
    if value is None:
        return [], 0
    if not isinstance(value, Mapping):
        return [invalid(path, value, "must be a map of keys to strings")], 0
    errs, size = [], 0
    for key, item in value.items():
        errs += _config_key(f"{path}[{key}]", str(key))
        if not isinstance(item, str):
            errs.append(invalid(f"{path}[{key}]", item, "must be a string"))
            continue
        if base64_values:
            try:
                size += len(base64.b64decode(item, validate=True))
            except (binascii.Error, ValueError):
                errs.append(
                    invalid(
                        f"{path}[{key}]",
                        "<value omitted>",
                        "must be base64 encoded (as `kubectl create secret` does)",
                    )
                )
        else:
            size += len(item.encode())
    return errs, size


def validate_config_map(obj: Obj) -> list[FieldError]:
    errs = check_metadata(obj, naming.dns1123_subdomain)
    data_errs, size = _string_map("data", obj.get("data"), base64_values=False)
    binary_errs, binary_size = _string_map("binaryData", obj.get("binaryData"), True)
    errs += data_errs + binary_errs
    for key in set(as_map(obj.get("data"))) & set(as_map(obj.get("binaryData"))):
        errs.append(invalid(f"data[{key}]", key, "duplicate of key present in binaryData"))
    if size + binary_size > MAX_SIZE_BYTES:
        errs.append(FieldError("", f"Too long: must have at most {MAX_SIZE_BYTES} bytes",
                               "FieldValueTooLong"))  # fmt: skip
    return errs


def validate_secret(obj: Obj) -> list[FieldError]:
    errs = check_metadata(obj, naming.dns1123_subdomain)
    data_errs, size = _string_map("data", obj.get("data"), base64_values=True)
    errs += data_errs
    if size > MAX_SIZE_BYTES:
        errs.append(FieldError("data", f"Too long: must have at most {MAX_SIZE_BYTES} bytes",
                               "FieldValueTooLong"))  # fmt: skip
    data = as_map(obj.get("data"))
    for key in _TYPE_KEYS.get(str(obj.get("type")), ()):
        if key not in data:
            errs.append(required(f"data[{key}]"))
    return errs


def validate_immutable_update(old: Obj, new: Obj) -> list[FieldError]:
    """``immutable: true`` ConfigMaps and Secrets keep their data and stay immutable."""
    if old.get("immutable") is not True:
        return []
    errs = []
    if new.get("immutable") is not True:
        errs.append(FieldError("immutable", "Forbidden: field is immutable when `immutable` "
                               "is set", "FieldValueForbidden"))  # fmt: skip
    for key in ("data", "binaryData"):
        if (old.get(key) or {}) != (new.get(key) or {}):
            errs.append(FieldError(key, "Forbidden: field is immutable when `immutable` is set",
                                   "FieldValueForbidden"))  # fmt: skip
    return errs


def validate_service_account(obj: Obj) -> list[FieldError]:
    return check_metadata(obj, naming.dns1123_subdomain)


def validate_lease(obj: Obj) -> list[FieldError]:
    errs = check_metadata(obj, naming.dns1123_subdomain)
    spec = as_map(obj.get("spec"))
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and (not is_int(duration) or duration <= 0):
        errs.append(invalid("spec.leaseDurationSeconds", duration, "must be greater than 0"))
    transitions = spec.get("leaseTransitions")
    if transitions is not None and (not is_int(transitions) or transitions < 0):
        errs.append(invalid("spec.leaseTransitions", transitions,
                            "must be greater than or equal to 0"))  # fmt: skip
    return errs


def validate_replication_controller(obj: Obj) -> list[FieldError]:
    errs = check_metadata(obj, naming.dns1123_subdomain)
    spec = as_map(obj.get("spec"))
    replicas = spec.get("replicas")
    if not is_int(replicas) or replicas < 0:
        errs.append(invalid("spec.replicas", replicas, "must be greater than or equal to 0"))
    selector = spec.get("selector")
    if not isinstance(selector, Mapping) or not selector:
        errs.append(required("spec.selector"))
        return errs
    errs += check_labels("spec.selector", selector)
    template = spec.get("template")
    if not isinstance(template, Mapping):
        return [*errs, required("spec.template")]
    template_labels = as_map(as_map(template.get("metadata")).get("labels"))
    if any(template_labels.get(k) != val for k, val in selector.items()):
        errs.append(invalid("spec.template.metadata.labels", dict(template_labels),
                            "`selector` does not match template `labels`"))  # fmt: skip
    errs += validate_pod_spec("spec.template.spec", template.get("spec"))
    return errs


# ---- registration (admission/pipeline.py reads these; defaults: admission/config_defaults.py)

API_VERSIONS = {
    "ConfigMap": "v1",
    "Secret": "v1",
    "ServiceAccount": "v1",
    "ReplicationController": "v1",
    "Lease": "coordination.k8s.io/v1",
}
SHORT_NAMES = {"cm": "ConfigMap", "sa": "ServiceAccount", "rc": "ReplicationController"}
VALIDATORS = {
    "ConfigMap": validate_config_map,
    "Secret": validate_secret,
    "ServiceAccount": validate_service_account,
    "ReplicationController": validate_replication_controller,
    "Lease": validate_lease,
}
UPDATE_VALIDATORS = {"ConfigMap": validate_immutable_update, "Secret": validate_immutable_update}
