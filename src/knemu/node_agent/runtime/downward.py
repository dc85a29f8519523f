"""The downward API: pod fields as files (downwardAPI volumes) and as environment variables
(``env[].valueFrom.fieldRef``), https://kubernetes.io/docs/concepts/workloads/pods/downward-api/.
Pure functions of the pod, its IP and its node's IP."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from knemu.errors import LocalError
from knemu.proto import knemu_pb2 as pb

_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")


class FieldRefError(LocalError):
    """A fieldRef knemu cannot fill (CreateContainerConfigError)."""


@dataclass(frozen=True)
class PodFields:
    pod: pb.Pod
    pod_ip: str = ""
    host_ip: str = ""


def field_value(fields: PodFields, field_path: str) -> str:
    """The value of ``field_path`` (metadata.name, metadata.labels['app'], status.podIP, ...)."""
    meta = fields.pod.metadata
    m = _SUBSCRIPT.match(field_path)
    if m:
        values = meta.labels if m.group(1) == "labels" else meta.annotations
        return values.get(m.group(2), "")
    if field_path in ("metadata.labels", "metadata.annotations"):
        values = meta.labels if field_path == "metadata.labels" else meta.annotations
        # The kubelet's file format: key="value" per line, sorted, values quoted.
        return "".join(f"{k}={json.dumps(v)}\n" for k, v in sorted(values.items()))
    simple = {
        "metadata.name": meta.name, "metadata.namespace": meta.namespace,
        "metadata.uid": meta.uid, "spec.nodeName": fields.pod.node_name,
        "status.podIP": fields.pod_ip, "status.hostIP": fields.host_ip,
    }  # fmt: skip
    if field_path not in simple:
        raise FieldRefError(
            f"fieldPath {field_path!r} is not supported; use one of {', '.join(simple)}, "
            "metadata.labels['KEY'] or metadata.annotations['KEY']"
        )
    return simple[field_path]
