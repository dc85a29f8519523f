"""Deployment, ReplicaSet and DaemonSet validation (pkg/apis/apps/validation/validation.go).

The selector is required, non-empty, must match the template's labels, and is immutable in
apps/v1; template pods must use restartPolicy Always; replicas are >= 0; the RollingUpdate
strategy may not have maxSurge and maxUnavailable both zero.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from knemu.apiserver.meta import labels, naming
from knemu.apiserver.validation.common import (
    Obj,
    as_map,
    check_labels,
    check_metadata,
    forbidden,
    invalid,
    is_int,
    not_supported,
    required,
)
from knemu.apiserver.validation.pod import validate_pod_spec
from knemu.errors import FieldError, LocalError

_PERCENT = re.compile(r"(\d+)%")


def _selector(spec: Mapping[str, Any], kind: str) -> list[FieldError]:
    selector = spec.get("selector")
    if selector is None:
        return [
            required(
                "spec.selector", "e.g. matchLabels: {app: web}, matching the template's labels"
            )
        ]
    if not isinstance(selector, Mapping) or not (
        selector.get("matchLabels") or selector.get("matchExpressions")
    ):
        return [invalid("spec.selector", selector, f"empty selector is invalid for {kind.lower()}")]
    try:
        parsed = labels.from_label_selector(selector)
    except LocalError as exc:
        return [invalid("spec.selector", selector, exc.message)]
    template_labels = as_map(as_map(as_map(spec.get("template")).get("metadata")).get("labels"))
    if not parsed.matches({str(k): str(v) for k, v in template_labels.items()}):
        return [
            invalid(
                "spec.template.metadata.labels",
                dict(template_labels),
                "`selector` does not match template `labels`",
            )
        ]
    return []


def _template(spec: Mapping[str, Any]) -> list[FieldError]:
    template = spec.get("template")
    if not isinstance(template, Mapping):
        return [required("spec.template")]
    meta = as_map(template.get("metadata"))
    errs = check_labels("spec.template.metadata.labels", meta.get("labels"))
    errs += validate_pod_spec("spec.template.spec", template.get("spec"))
    policy = as_map(template.get("spec")).get("restartPolicy")
    if policy != "Always":
        errs.append(not_supported("spec.template.spec.restartPolicy", policy, ("Always",)))
    return errs


def _replicas(spec: Mapping[str, Any]) -> list[FieldError]:
    replicas = spec.get("replicas")
    if not is_int(replicas) or replicas < 0:
        return [invalid("spec.replicas", replicas, "must be greater than or equal to 0")]
    return []


def _int_or_percent(path: str, value: Any) -> list[FieldError]:
    if is_int(value) and value >= 0:
        return []
    if isinstance(value, str) and (m := _PERCENT.fullmatch(value)) and int(m.group(1)) <= 100:
        return []
    return [
        invalid(
            path, value, "must be a non-negative integer or a percentage like '25%' (at most 100%)"
        )
    ]


def is_zero(value: Any) -> bool:
    return value in (0, "0%")


def _strategy(spec: Mapping[str, Any]) -> list[FieldError]:
    strategy = as_map(spec.get("strategy"))
    stype = strategy.get("type")
    if stype not in ("Recreate", "RollingUpdate"):
        return [not_supported("spec.strategy.type", stype, ("Recreate", "RollingUpdate"))]
    rolling = strategy.get("rollingUpdate")
    if stype == "Recreate":
        if rolling is not None:
            return [
                forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                )
            ]
        return []
    rolling = as_map(rolling)
    base = "spec.strategy.rollingUpdate"
    errs = _int_or_percent(f"{base}.maxSurge", rolling.get("maxSurge"))
    errs += _int_or_percent(f"{base}.maxUnavailable", rolling.get("maxUnavailable"))
    if not errs and is_zero(rolling.get("maxSurge")) and is_zero(rolling.get("maxUnavailable")):
        errs.append(
            invalid(
                f"{base}.maxUnavailable",
                rolling.get("maxUnavailable"),
                "may not be 0 when `maxSurge` is 0",
            )
        )
    return errs


def _common(obj: Obj) -> list[FieldError]:
    spec = as_map(obj.get("spec"))
    errs = check_metadata(obj, naming.dns1123_subdomain)
    errs += _replicas(spec)
    errs += _selector(spec, str(obj.get("kind")))
    errs += _template(spec)
    min_ready = spec.get("minReadySeconds", 0)
    if not is_int(min_ready) or min_ready < 0:
        errs.append(
            invalid("spec.minReadySeconds", min_ready, "must be greater than or equal to 0")
        )
    return errs


def validate_deployment(obj: Obj) -> list[FieldError]:
    spec = as_map(obj.get("spec"))
    errs = _common(obj) + _strategy(spec)
    limit = spec.get("revisionHistoryLimit")
    if limit is not None and (not is_int(limit) or limit < 0):
        errs.append(
            invalid("spec.revisionHistoryLimit", limit, "must be greater than or equal to 0")
        )
    return errs


def validate_replica_set(obj: Obj) -> list[FieldError]:
    return _common(obj)


def _update_strategy(spec: Mapping[str, Any]) -> list[FieldError]:
    strategy = as_map(spec.get("updateStrategy"))
    stype = strategy.get("type")
    base = "spec.updateStrategy"
    if stype not in ("RollingUpdate", "OnDelete"):
        return [not_supported(f"{base}.type", stype, ("OnDelete", "RollingUpdate"))]
    if stype == "OnDelete":
        return []
    rolling = as_map(strategy.get("rollingUpdate"))
    errs = _int_or_percent(f"{base}.rollingUpdate.maxSurge", rolling.get("maxSurge", 0))
    unavailable = rolling.get("maxUnavailable", 1)
    errs += _int_or_percent(f"{base}.rollingUpdate.maxUnavailable", unavailable)
    if not errs and is_zero(rolling.get("maxSurge", 0)) and is_zero(unavailable):
        errs.append(invalid(f"{base}.rollingUpdate.maxUnavailable", unavailable,
                            "cannot be 0 when maxSurge is 0"))  # fmt: skip
    return errs


def validate_daemon_set(obj: Obj) -> list[FieldError]:
    """ValidateDaemonSet: as a ReplicaSet without replicas, plus its update strategy."""
    spec = as_map(obj.get("spec"))
    errs = check_metadata(obj, naming.dns1123_subdomain)
    errs += _selector(spec, "DaemonSet") + _template(spec) + _update_strategy(spec)
    for key in ("minReadySeconds", "revisionHistoryLimit"):
        value = spec.get(key, 0)
        if not is_int(value) or value < 0:
            errs.append(invalid(f"spec.{key}", value, "must be greater than or equal to 0"))
    return errs


def validate_controller_revision(obj: Obj) -> list[FieldError]:
    """ValidateControllerRevision: a name, data, and a revision that is not negative."""
    errs = check_metadata(obj, naming.dns1123_subdomain)
    if obj.get("data") is None:
        errs.append(required("data", "the state this revision restores"))
    revision = obj.get("revision")
    if not is_int(revision) or revision < 0:
        errs.append(invalid("revision", revision, "must be greater than or equal to 0"))
    return errs


def validate_controller_revision_update(old: Obj, new: Obj) -> list[FieldError]:
    """ValidateControllerRevisionUpdate: data is immutable (revision may change)."""
    if old.get("data") != new.get("data"):
        return [invalid("data", "<data>", "field is immutable")]
    return []


def validate_apps_update(old: Obj, new: Obj) -> list[FieldError]:
    """apps/v1 selectors are immutable (changing them would orphan the existing pods)."""
    old_sel, new_sel = (
        as_map(old.get("spec")).get("selector"),
        as_map(new.get("spec")).get("selector"),
    )
    if old_sel != new_sel:
        return [invalid("spec.selector", new_sel, "field is immutable")]
    return []
