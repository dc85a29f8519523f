"""Defaults of ConfigMap, Secret, ServiceAccount, Lease and ReplicationController (their
validation is ``validation/config.py``): Secret's stringData and type, a ReplicationController's
replicas, selector, labels and pod template defaults. Sans-I/O."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from knemu.apiserver.admission.defaults import default_pod_spec
from knemu.apiserver.validation.common import as_map

Obj = dict[str, Any]


def default_secret(obj: Obj) -> None:
    """stringData (plain text) into data (base64), then dropped; type Opaque."""
    obj.setdefault("type", "Opaque")
    plain = obj.pop("stringData", None)
    if isinstance(plain, Mapping):
        data = obj.get("data")
        if not isinstance(data, dict):
            data = obj["data"] = {}
        for key, value in plain.items():
            text = value if isinstance(value, str) else json.dumps(value)
            data[str(key)] = base64.b64encode(text.encode()).decode()


def default_replication_controller(obj: Obj) -> None:
    """replicas 1; selector and labels from the template's labels (as upstream defaults)."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = obj["spec"] = {}
    spec.setdefault("replicas", 1)
    template = spec.get("template")
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        default_pod_spec(template["spec"])
    template_labels = as_map(as_map(as_map(spec.get("template")).get("metadata")).get("labels"))
    if template_labels:
        spec.setdefault("selector", dict(template_labels))
        meta = obj.setdefault("metadata", {})
        if isinstance(meta, dict) and not meta.get("labels"):
            meta["labels"] = dict(template_labels)


DEFAULTERS = {"Secret": default_secret, "ReplicationController": default_replication_controller}


def apply_defaults(obj: Obj) -> None:
    """Defaults of the kinds this module owns (after defaults.apply_defaults)."""
    defaulter = DEFAULTERS.get(str(obj.get("kind")))
    if defaulter is not None:
        defaulter(obj)
