"""Pod fields the node's container runtime needs (images, volumes, security, limits):
JSON -> protobuf, next to ``convert.pod_to_proto``.

Quantities follow apimachinery's ``resource.Quantity``: decimal suffixes (k, M, G, T, P, E),
binary ones (Ki, Mi, Gi, Ti, Pi, Ei), ``m`` (milli) and exponents (``1e3``).  A quantity that
does not parse converts to 0 (no limit); validation is the api-server's job, not the wire's.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from knemu.apiserver.grpc_api.fields import (
    field_bool as _bool,
    field_int as _int,
    field_list as _list,
    field_map as _map,
    field_str as _str,
)
from knemu.proto import knemu_pb2 as pb

_SUFFIXES = {
    "": Decimal(1), "m": Decimal("0.001"),
    "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
}  # fmt: skip
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
VOLUME_KINDS = ("emptyDir", "hostPath", "downwardAPI", "configMap", "secret")
_KEY_REFS = {"configMapKeyRef": "ConfigMap", "secretKeyRef": "Secret"}


def parse_quantity(value: Any) -> Decimal | None:
    """A Kubernetes quantity as a Decimal (``"128Mi"`` -> 134217728), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return Decimal(str(value))
    m = _QUANTITY.match(str(value).strip()) if isinstance(value, str) else None
    if m is None:
        return None
    try:
        return Decimal(m.group(1)) * _SUFFIXES[m.group(2) or ""]
    except InvalidOperation:
        return None


def memory_bytes(value: Any) -> int:
    q = parse_quantity(value)
    return max(0, min(int(q), 2**63 - 1)) if q is not None else 0


def cpu_millis(value: Any) -> int:
    q = parse_quantity(value)
    return (
        max(0, min(int((q * 1000).to_integral_value(rounding="ROUND_CEILING")), 2**32 - 1))
        if q
        else 0
    )


def env_var_to_proto(src: Any) -> pb.EnvVar:
    """A literal value, or a source the node resolves: fieldRef (the downward API),
    resourceFieldRef, configMapKeyRef/secretKeyRef (objects it gets with GetPodSources)."""
    var = pb.EnvVar(name=_str(src.get("name")), value=_str(src.get("value")))
    value_from = _map(src.get("valueFrom"))
    ref_kind = next((k for k in _KEY_REFS if isinstance(value_from.get(k), dict)), "")
    if isinstance(value_from.get("fieldRef"), dict):
        var.field_path = _str(_map(value_from["fieldRef"]).get("fieldPath"))
    elif ref_kind:
        ref = _map(value_from[ref_kind])
        var.key_ref.CopyFrom(pb.KeyRef(
            kind=_KEY_REFS[ref_kind], name=_str(ref.get("name")), key=_str(ref.get("key")),
            optional=_bool(ref.get("optional")),
        ))  # fmt: skip
    elif isinstance(value_from.get("resourceFieldRef"), dict):
        ref = _map(value_from["resourceFieldRef"])
        var.resource = _str(ref.get("resource"))
        var.resource_container = _str(ref.get("containerName"))
        divisor = parse_quantity(ref.get("divisor")) if "divisor" in ref else None
        var.resource_divisor_millis = max(0, min(int(divisor * 1000), 2**63)) if divisor else 0
    elif value_from:
        var.unsupported = next(iter(value_from))
    return var


def env_from_to_proto(value: Any) -> pb.EnvFromSource:
    src = _map(value)
    kind = "Secret" if isinstance(src.get("secretRef"), dict) else "ConfigMap"
    ref = _map(src.get("secretRef") if kind == "Secret" else src.get("configMapRef"))
    return pb.EnvFromSource(
        kind=kind, name=_str(ref.get("name")), prefix=_str(src.get("prefix")),
        optional=_bool(ref.get("optional")),
    )  # fmt: skip


def container_runtime_fields(src: Any) -> dict[str, Any]:
    """Keyword arguments for pb.Container: pull policy, user, volume mounts, limits."""
    src = _map(src)
    security = _map(src.get("securityContext"))
    limits = _map(_map(src.get("resources")).get("limits"))
    requests = _map(_map(src.get("resources")).get("requests"))
    out: dict[str, Any] = {
        "image_pull_policy": _str(src.get("imagePullPolicy")),
        "volume_mounts": [
            pb.VolumeMount(
                name=_str(m.get("name")),
                mount_path=_str(m.get("mountPath")),
                read_only=_bool(m.get("readOnly")),
                sub_path=_str(m.get("subPath")),
            )
            for m in map(_map, _list(src.get("volumeMounts")))
        ],
        "memory_limit_bytes": memory_bytes(limits.get("memory")),
        "cpu_limit_millis": cpu_millis(limits.get("cpu")),
        "memory_request_bytes": memory_bytes(requests.get("memory")),
        "cpu_request_millis": cpu_millis(requests.get("cpu")),
        "env_from": [env_from_to_proto(e) for e in _list(src.get("envFrom"))],
    }
    out["privileged"] = _bool(security.get("privileged"))
    out["capabilities_add"] = [
        _str(c).upper().removeprefix("CAP_")
        for c in _list(_map(security.get("capabilities")).get("add"))
        if _str(c)
    ]
    if isinstance(security.get("allowPrivilegeEscalation"), bool):
        out["allow_privilege_escalation"] = security["allowPrivilegeEscalation"]
    for key, name in (("runAsUser", "run_as_user"), ("runAsGroup", "run_as_group")):
        if isinstance(security.get(key), int) and not isinstance(security.get(key), bool):
            out[name] = _int(security[key], maximum=2**31 - 1)
    return out


def volume_to_proto(value: Any) -> pb.Volume:
    src = _map(value)
    vol = pb.Volume(name=_str(src.get("name")))
    if isinstance(src.get("emptyDir"), dict):
        empty = _map(src["emptyDir"])
        vol.kind, vol.medium = "emptyDir", _str(empty.get("medium"))
        vol.size_limit_bytes = memory_bytes(empty.get("sizeLimit"))
    elif isinstance(src.get("hostPath"), dict):
        host = _map(src["hostPath"])
        vol.kind, vol.host_path = "hostPath", _str(host.get("path"))
        vol.host_path_type = _str(host.get("type"))
    elif isinstance(src.get("downwardAPI"), dict):
        vol.kind = "downwardAPI"
        for item in map(_map, _list(_map(src["downwardAPI"]).get("items"))):
            field = _str(_map(item.get("fieldRef")).get("fieldPath"))
            vol.items.append(pb.DownwardAPIFile(path=_str(item.get("path")), field_path=field))
    elif isinstance(src.get("configMap"), dict) or isinstance(src.get("secret"), dict):
        vol.kind = "configMap" if isinstance(src.get("configMap"), dict) else "secret"
        ref = _map(src[vol.kind])
        vol.source_name = _str(ref.get("name" if vol.kind == "configMap" else "secretName"))
        vol.optional = _bool(ref.get("optional"))
        if isinstance(ref.get("defaultMode"), int):
            vol.default_mode = _int(ref["defaultMode"], maximum=0o777)
        for item in map(_map, _list(ref.get("items"))):
            key_item = pb.KeyToPath(key=_str(item.get("key")), path=_str(item.get("path")))
            if isinstance(item.get("mode"), int):
                key_item.mode = _int(item["mode"], maximum=0o777)
            vol.key_items.append(key_item)
    else:
        vol.unsupported = next((k for k in src if k != "name"), "")
    return vol


def pod_runtime_fields(spec: Any, container: Any) -> dict[str, Any]:
    """Keyword arguments for pb.Pod: init containers, shareProcessNamespace, volumes.
    ``container`` converts one container (``convert._container_to_proto``)."""
    spec = _map(spec)
    return {
        "init_containers": [container(c) for c in _list(spec.get("initContainers"))],
        "share_process_namespace": _bool(spec.get("shareProcessNamespace")),
        "volumes": [volume_to_proto(v) for v in _list(spec.get("volumes"))],
    }


def apply_pod_security(pod: pb.Pod, spec: Any) -> None:
    """The pod's securityContext.runAsUser/runAsGroup for every container that sets none
    (a container's own wins, as in Kubernetes)."""
    security = _map(_map(spec).get("securityContext"))
    user, group = (
        _int(v, maximum=2**31 - 1) if isinstance(v, int) and not isinstance(v, bool) else None
        for v in (security.get("runAsUser"), security.get("runAsGroup"))
    )
    for container in [*pod.containers, *pod.init_containers]:
        if user is not None and not container.HasField("run_as_user"):
            container.run_as_user = user
        if group is not None and not container.HasField("run_as_group"):
            container.run_as_group = group
