"""Total accessors for converting stored Kubernetes JSON to protobuf (``grpc_api.convert``):
a missing field or one of the wrong type gives the proto default, never an exception."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from knemu.proto import knemu_pb2 as pb

_UINT32_MAX = (1 << 32) - 1
_INT64_MAX = (1 << 63) - 1


def utf8(text: str) -> str:
    # proto3 strings must be valid UTF-8, but JSON escapes can decode to lone surrogates.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def field_map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def field_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def field_str(value: Any) -> str:
    if isinstance(value, str):
        return utf8(value)
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int | float):
        return str(value)
    return ""


def field_int(value: Any, maximum: int = _INT64_MAX, minimum: int = 0) -> int:
    """Integers and decimal strings (resourceVersion is a string) -> int, clamped."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.isdigit()) or len(text) > 20:
            return 0  # not a plain decimal ("²" is a digit to isdigit), or absurdly long
        value = int(text)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        return 0
    return max(minimum, min(maximum, value))


def field_u32(value: Any) -> int:
    return field_int(value, _UINT32_MAX)


def field_bool(value: Any, default: bool = False) -> bool:
    return value if isinstance(value, bool) else default


def field_strs(value: Any) -> list[str]:
    return [field_str(v) for v in field_list(value)]


def field_str_map(value: Any) -> dict[str, str]:
    return {utf8(k): field_str(v) for k, v in field_map(value).items() if isinstance(k, str)}


def port_string(value: Any) -> str:
    """IntOrString (ports, targetPort) as text: 8080 -> "8080", "http" -> "http"."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return field_str(value) if isinstance(value, str) else ""


def condition_true(status: Mapping[str, Any], condition: str) -> bool:
    for cond in field_list(status.get("conditions")):
        cond = field_map(cond)
        if cond.get("type") == condition:
            return cond.get("status") == "True"
    return False


# ---- shared --------------------------------------------------------------------------------


def meta_to_proto(obj: Mapping[str, Any]) -> pb.ObjectMeta:
    meta = field_map(obj.get("metadata"))
    return pb.ObjectMeta(
        name=field_str(meta.get("name")),
        namespace=field_str(meta.get("namespace")),
        uid=field_str(meta.get("uid")),
        resource_version=field_int(meta.get("resourceVersion")),
        labels=field_str_map(meta.get("labels")),
        annotations=field_str_map(meta.get("annotations")),
        deleting=meta.get("deletionTimestamp") is not None,
        creation_timestamp=field_str(meta.get("creationTimestamp")),
    )
