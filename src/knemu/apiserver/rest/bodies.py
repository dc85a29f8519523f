"""Request and response bodies of the REST layer: JSON/YAML decoding, DeleteOptions
preconditions, List and Scale shapes. Nothing here does I/O; the aiohttp handlers call these.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from knemu import yamlload
from knemu.apiserver.rest.limits import TooComplex, check_value, check_yaml_flow_depth
from knemu.apiserver.rest.status import BadRequest, Obj
from knemu.errors import Conflict

_TRAILING_SPACE = re.compile(r"[ \t]+$", re.MULTILINE)


# ---- bodies ---------------------------------------------------------------------------------


def decode_body(raw: bytes, content_type: str, what: str = "request body") -> Any:
    """JSON (or YAML when the content type says so) -> Python value; BadRequest otherwise,
    TooComplex for one over the nesting/size limits of ``knemu.apiserver.rest.limits``."""
    try:
        value = _decode(raw, content_type, what)
    except RecursionError:
        raise TooComplex(
            f"{what} is nested too deep to parse; Kubernetes objects are not"
        ) from None
    check_value(value, what)
    return value


def _decode(raw: bytes, content_type: str, what: str) -> Any:
    if not raw.strip():
        raise BadRequest(f"{what} is empty: send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"{what} is not UTF-8 ({exc}); send JSON text") from None
    if "yaml" in content_type:
        check_yaml_flow_depth(text, what)
        return _load_yaml(text, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None


def _load_yaml(text: str, what: str) -> Any:
    """YAML as Kubernetes' reader (go-yaml) takes it: trailing TABs after values, which
    PyYAML rejects and seed 002's manifests contain, are tolerated by one retry without
    trailing whitespace (block scalars lose theirs: no knemu kind carries such text)."""
    try:
        return yamlload.safe_load(text)
    except (ValueError, OverflowError) as exc:  # a YAML value Python cannot represent
        raise BadRequest(f"{what} is not valid YAML: {exc}") from None
    except yaml.YAMLError as exc:
        if "\\t" in str(exc):
            try:
                return yamlload.safe_load(_TRAILING_SPACE.sub("", text))
            except yaml.YAMLError:
                pass
        raise BadRequest(f"{what} is not valid YAML: {exc}") from None


def decode_object(raw: bytes, content_type: str) -> Obj:
    value = decode_body(raw, content_type)
    if not isinstance(value, dict):
        raise BadRequest(
            f"request body must be a JSON object (a Kubernetes resource), not "
            f"{type(value).__name__}"
        )
    return value


def check_preconditions(options: Obj, old: Obj) -> None:
    """DeleteOptions.preconditions (uid, resourceVersion) against the stored object."""
    pre = options.get("preconditions") or {}
    if not isinstance(pre, dict):
        raise BadRequest(
            "DeleteOptions.preconditions must be a map with uid and/or resourceVersion, "
            f"not {type(pre).__name__}"
        )
    meta = old["metadata"]
    for key in ("uid", "resourceVersion"):
        if pre.get(key) is not None and not isinstance(pre[key], str):
            raise BadRequest(f"DeleteOptions.preconditions.{key} must be a string")
        if pre.get(key) and pre[key] != meta.get(key):
            raise Conflict(
                f"precondition failed: {key} is {meta.get(key)}, not {pre[key]}; read the "
                "object again"
            )


# ---- response shapes ------------------------------------------------------------------------


def object_list(api_version: str, list_kind: str, items: list[Obj], rv: int) -> Obj:
    return {
        "apiVersion": api_version,
        "kind": list_kind,
        "metadata": {"resourceVersion": str(rv)},
        "items": items,
    }


def scale_of(obj: Obj, selector: str) -> Obj:
    """autoscaling/v1 Scale view of a Deployment/ReplicaSet (the /scale subresource)."""
    meta = obj.get("metadata", {})
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": int(obj.get("spec", {}).get("replicas", 1))},
        "status": {
            "replicas": int(obj.get("status", {}).get("replicas", 0)),
            "selector": selector,
        },
    }


def selector_text(match_labels: Any) -> str:
    """spec.selector.matchLabels -> ``a=b,c=d`` (Scale.status.selector)."""
    if not isinstance(match_labels, dict):
        return ""
    return ",".join(f"{k}={v}" for k, v in sorted(match_labels.items()))
