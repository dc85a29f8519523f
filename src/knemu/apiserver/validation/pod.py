"""Pod validation (pkg/apis/core/validation/validation.go ValidatePodSpec and friends).

``validate_pod_spec`` is shared with Deployment and ReplicaSet templates, whose paths start
at ``spec.template.spec``.
"""

from __future__ import annotations

import copy
from typing import Any

from knemu.apiserver.meta import naming
from knemu.apiserver.validation.common import (
    Obj,
    as_list,
    as_map,
    check_labels,
    check_metadata,
    check_name,
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

RESTART_POLICIES = ("Always", "OnFailure", "Never")
DNS_POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")
TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def _container_ports(path: str, ports: Any, seen_names: set[str]) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, port in enumerate(as_list(ports)):
        base, port = f"{path}[{i}]", as_map(port)
        errs += check_port(f"{base}.containerPort", port.get("containerPort"))
        if port.get("hostPort") not in (None, 0):
            errs += check_port(f"{base}.hostPort", port.get("hostPort"))
        errs += check_protocol(f"{base}.protocol", port.get("protocol"))
        name = port.get("name")
        if name in (None, ""):
            continue
        if not isinstance(name, str):
            errs.append(invalid(f"{base}.name", name, "must be a string"))
            continue
        errs += [invalid(f"{base}.name", name, e) for e in naming.iana_svc_name(name)]
        if name in seen_names:
            errs.append(duplicate(f"{base}.name", name))
        seen_names.add(name)
    return errs


def _unique_host_ports(path: str, containers: Any) -> list[FieldError]:
    """No two ports of a pod may claim one protocol/hostIP/hostPort (Kubernetes'
    AccumulateUniqueHostPorts): the node could publish only one of them."""
    errs: list[FieldError] = []
    seen: set[str] = set()
    for i, container in enumerate(as_list(containers)):
        for j, port in enumerate(as_list(as_map(container).get("ports"))):
            port = as_map(port)
            if port.get("hostPort") in (None, 0):
                continue
            key = f"{port.get('protocol') or 'TCP'}/{port.get('hostIP') or ''}/{port['hostPort']}"
            if key in seen:
                errs.append(duplicate(f"{path}[{i}].ports[{j}].hostPort", key))
            seen.add(key)
    return errs


def _host_network_ports(path: str, containers: Any) -> list[FieldError]:
    """A hostNetwork pod listens on the node's ports themselves, so a hostPort other than its
    containerPort could never be honoured (Kubernetes' validateHostNetwork)."""
    errs: list[FieldError] = []
    for i, container in enumerate(as_list(containers)):
        for j, port in enumerate(as_list(as_map(container).get("ports"))):
            port = as_map(port)
            host = port.get("hostPort")
            if host not in (None, 0) and host != port.get("containerPort"):
                why = "must match `containerPort` when `hostNetwork` is true"
                errs.append(invalid(f"{path}[{i}].ports[{j}].hostPort", host, why))
    return errs


def _containers(path: str, containers: Any, names: set[str], ports: set[str]) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, container in enumerate(as_list(containers)):
        base, container = f"{path}[{i}]", as_map(container)
        name = container.get("name")
        errs += check_name(f"{base}.name", name, naming.dns1123_label)
        if isinstance(name, str) and name:
            if name in names:
                errs.append(duplicate(f"{base}.name", name))
            names.add(name)
        if not container.get("image"):
            errs.append(required(f"{base}.image", "name the image (e.g. nginx:1.16)"))
        errs += _container_ports(f"{base}.ports", container.get("ports"), ports)
        for j, env in enumerate(as_list(container.get("env"))):
            if not as_map(env).get("name"):
                errs.append(required(f"{base}.env[{j}].name"))
    return errs


def _tolerations(path: str, tolerations: Any) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, tol in enumerate(as_list(tolerations)):
        base, tol = f"{path}[{i}]", as_map(tol)
        op = tol.get("operator", "Equal")
        if op not in ("Equal", "Exists"):
            errs.append(not_supported(f"{base}.operator", op, ("Equal", "Exists")))
        if op == "Exists" and tol.get("value"):
            errs.append(
                invalid(f"{base}.operator", op, "value must be empty when `operator` is 'Exists'")
            )
        effect = tol.get("effect")
        if effect not in (None, "", *TOLERATION_EFFECTS):
            errs.append(not_supported(f"{base}.effect", effect, TOLERATION_EFFECTS))
        if tol.get("tolerationSeconds") is not None and effect != "NoExecute":
            errs.append(
                invalid(
                    f"{base}.effect",
                    effect,
                    "effect must be 'NoExecute' when `tolerationSeconds` is set",
                )
            )
    return errs


def _dns(path: str, spec: Any) -> list[FieldError]:
    errs: list[FieldError] = []
    policy = spec.get("dnsPolicy")
    if policy not in DNS_POLICIES:
        errs.append(not_supported(f"{path}.dnsPolicy", policy, DNS_POLICIES))
    config = spec.get("dnsConfig")
    if policy == "None" and not as_list(as_map(config).get("nameservers")):
        errs.append(
            required(f"{path}.dnsConfig", "must provide `dnsConfig` when `dnsPolicy` is None")
        )
    for key in ("hostname", "subdomain"):
        if spec.get(key):
            errs += check_name(f"{path}.{key}", spec.get(key), naming.dns1123_label)
    return errs


def validate_pod_spec(path: str, spec: Any) -> list[FieldError]:
    spec = as_map(spec)
    if not spec:
        return [required(path)]
    errs: list[FieldError] = []
    names: set[str] = set()
    ports: set[str] = set()
    if not as_list(spec.get("containers")):
        errs.append(required(f"{path}.containers", "a pod needs at least one container"))
    errs += _containers(f"{path}.initContainers", spec.get("initContainers"), names, set())
    errs += _containers(f"{path}.containers", spec.get("containers"), names, ports)
    errs += _unique_host_ports(f"{path}.containers", spec.get("containers"))
    if spec.get("hostNetwork") is True:
        for key in ("initContainers", "containers"):
            errs += _host_network_ports(f"{path}.{key}", spec.get(key))
    policy = spec.get("restartPolicy")
    if policy not in RESTART_POLICIES:
        errs.append(not_supported(f"{path}.restartPolicy", policy, RESTART_POLICIES))
    errs += _dns(path, spec)
    errs += check_labels(f"{path}.nodeSelector", spec.get("nodeSelector"))
    if spec.get("nodeName"):
        errs += check_name(f"{path}.nodeName", spec.get("nodeName"), naming.dns1123_subdomain)
    grace = spec.get("terminationGracePeriodSeconds")
    if grace is not None and (not is_int(grace) or grace < 0):
        errs.append(invalid(f"{path}.terminationGracePeriodSeconds", grace, "must be >= 0"))
    errs += _tolerations(f"{path}.tolerations", spec.get("tolerations"))
    return errs


def validate_pod(obj: Obj) -> list[FieldError]:
    return check_metadata(obj, naming.dns1123_subdomain) + validate_pod_spec(
        "spec", obj.get("spec")
    )


_POD_UPDATE_FORBIDDEN = (
    "pod updates may not change fields other than `spec.containers[*].image`, "
    "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only "
    "additions to existing tolerations) or `spec.terminationGracePeriodSeconds`; delete the "
    "pod and create it again (or change the Deployment's template instead)"
)


def validate_pod_update(old: Obj, new: Obj) -> list[FieldError]:
    """A pod's spec is immutable but for images and a few fields (ValidatePodUpdate)."""
    old_spec, new_spec = as_map(old.get("spec")), copy.deepcopy(dict(as_map(new.get("spec"))))
    for key in ("containers", "initContainers"):
        olds, news = as_list(old_spec.get(key)), as_list(new_spec.get(key))
        if len(olds) == len(news):
            for o, n in zip(olds, news, strict=True):
                if isinstance(n, dict):
                    n["image"] = as_map(o).get("image")
    for key in ("activeDeadlineSeconds", "terminationGracePeriodSeconds"):
        new_spec.pop(key, None)
    old_tolerations = as_list(old_spec.get("tolerations"))
    new_tolerations = as_list(new_spec.pop("tolerations", None))
    masked_old = {
        k: v
        for k, v in old_spec.items()
        if k not in ("activeDeadlineSeconds", "terminationGracePeriodSeconds", "tolerations")
    }
    errs: list[FieldError] = []
    if new_spec != masked_old:
        errs.append(forbidden("spec", _POD_UPDATE_FORBIDDEN))
    if any(t not in new_tolerations for t in old_tolerations):
        errs.append(
            forbidden("spec.tolerations", "existing toleration can not be modified or removed")
        )
    return errs
