"""A pod's ConfigMaps and Secrets as the kubelet uses them: env vars (``valueFrom``
configMapKeyRef/secretKeyRef/resourceFieldRef/fieldRef, ``envFrom``) and the files of
configMap/secret volumes.  Pure functions of the pod, the objects the api-server sent for it
(GetPodSources) and the node's capacity; the errors carry the kubelet's messages
(kubelet_pods.go makeEnvironmentVariables, configmap/secret volume plugins) and make the
container wait with CreateContainerConfigError.

Order, as the kubelet's: every ``envFrom`` source in turn, then ``env`` (later wins); only
``env`` values are ``$(VAR)``-expanded, against what came before.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from knemu.errors import LocalError
from knemu.node_agent.runtime.downward import FieldRefError, PodFields, field_value
from knemu.node_agent.runtime.workloads import expand_vars
from knemu.proto import knemu_pb2 as pb

DEFAULT_MODE = 0o644  # configMap/secret volumes' defaultMode
TOKEN_KIND = "ServiceAccountToken"  # GetPodSources' answer for the pod's token
TOKEN_KEY = (TOKEN_KIND, "")  # where the token is kept among a pod's sources
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_VOLUME = ".kube-api-access"  # not a valid volume name: never one of the pod's own
REFRESH_FRACTION = 0.8  # the kubelet renews a token when 80 % of its lifetime has passed
Sources = Mapping[tuple[str, str], pb.SourceObject]  # (kind, name) -> object


class SourceError(LocalError):
    """A referenced ConfigMap/Secret or key is missing (CreateContainerConfigError)."""


@dataclass(frozen=True)
class NodeCapacity:
    """What resourceFieldRef limits report when a container has none: the node's allocatable."""

    cpu_millis: int
    memory_bytes: int


@dataclass(frozen=True)
class VolumeFile:
    data: bytes
    mode: int


@dataclass
class ResolvedEnv:
    spec: pb.Container  # a copy whose env holds every value (envFrom entries first)
    skipped: list[str] = field(default_factory=list)  # envFrom keys that are not valid names


def references(pod: pb.Pod) -> list[tuple[str, str]]:
    """(kind, name) of every ConfigMap/Secret the pod names: does it need GetPodSources?"""
    refs = {("ConfigMap" if v.kind == "configMap" else "Secret", v.source_name)
            for v in pod.volumes if v.kind in ("configMap", "secret")}  # fmt: skip
    for c in list(pod.containers) + list(pod.init_containers):
        refs |= {(v.key_ref.kind, v.key_ref.name) for v in c.env if v.key_ref.kind}
        refs |= {(s.kind, s.name) for s in c.env_from}
    return sorted(refs)


def _object(sources: Sources, kind: str, name: str, namespace: str) -> pb.SourceObject | None:
    obj = sources.get((kind, name))
    if obj is None:
        raise SourceError(
            f"{kind} {namespace}/{name}: the api-server did not send it; the node retries"
        )
    return obj if obj.found else None


def _key_value(ref: pb.KeyRef, sources: Sources, namespace: str) -> str | None:
    obj = _object(sources, ref.kind, ref.name, namespace)
    if obj is None:
        if ref.optional:
            return None
        raise SourceError(f'{ref.kind.lower()} "{ref.name}" not found')
    if ref.key not in obj.data:
        if ref.optional:
            return None
        raise SourceError(f"couldn't find key {ref.key} in {ref.kind} {namespace}/{ref.name}")
    return obj.data[ref.key].decode("utf-8", "replace")


def _valid_env_name(name: str) -> bool:
    # Kubernetes 1.30+: any printable ASCII but '=' (IsEnvVarName).
    return bool(name) and name.isascii() and name.isprintable() and "=" not in name


def _resource_value(var: pb.EnvVar, spec: pb.Container, capacity: NodeCapacity) -> str:
    """resourceFieldRef, as the kubelet's resource.ExtractContainerResourceValue: rounded up
    in units of the divisor; an unset limit is the node's allocatable."""
    if var.resource == "limits.cpu":
        value_millis = spec.cpu_limit_millis or capacity.cpu_millis
    elif var.resource == "requests.cpu":
        value_millis = spec.cpu_request_millis or spec.cpu_limit_millis
    elif var.resource == "limits.memory":
        value_millis = (spec.memory_limit_bytes or capacity.memory_bytes) * 1000
    elif var.resource == "requests.memory":
        value_millis = (spec.memory_request_bytes or spec.memory_limit_bytes) * 1000
    else:
        raise SourceError(
            f"env {var.name}: resourceFieldRef resource {var.resource!r} is not supported; use "
            "limits.cpu, limits.memory, requests.cpu or requests.memory"
        )
    divisor = var.resource_divisor_millis or 1000
    return str(math.ceil(value_millis / divisor))


def resolve_env(
    spec: pb.Container,
    pod: pb.Pod,
    fields: PodFields,
    sources: Sources,
    capacity: NodeCapacity,
    containers: Mapping[str, pb.Container] | None = None,
) -> ResolvedEnv:
    """The container's env with every value filled in; SourceError/FieldRefError say why not.
    ``containers`` (by name) resolves a resourceFieldRef's containerName."""
    namespace = pod.metadata.namespace
    values: dict[str, str] = {}
    skipped: list[str] = []
    for source in spec.env_from:
        obj = _object(sources, source.kind, source.name, namespace)
        if obj is None:
            if source.optional:
                continue
            raise SourceError(f'{source.kind.lower()} "{source.name}" not found')
        for key in sorted(obj.data):
            name = source.prefix + key
            if _valid_env_name(name):
                values[name] = obj.data[key].decode("utf-8", "replace")
            else:
                skipped.append(name)
    for var in spec.env:
        if var.unsupported:
            raise FieldRefError(
                f"env {var.name} of container {spec.name}: valueFrom.{var.unsupported} is not "
                "supported by knemu"
            )
        if var.field_path:
            values[var.name] = field_value(fields, var.field_path)
        elif var.key_ref.kind:
            value = _key_value(var.key_ref, sources, namespace)
            if value is None:
                values.pop(var.name, None)  # optional and missing: the variable is not set
                continue
            values[var.name] = value
        elif var.resource:
            target = (containers or {}).get(var.resource_container or spec.name, spec)
            values[var.name] = _resource_value(var, target, capacity)
        else:
            values[var.name] = expand_vars(var.value, values)
    out = pb.Container()
    out.CopyFrom(spec)
    del out.env[:]
    del out.env_from[:]
    out.env.extend(pb.EnvVar(name=k, value=v) for k, v in values.items())
    return ResolvedEnv(out, skipped)


def _relative(path: str, volume: str) -> str:
    p = PurePosixPath(path)
    if not path or p.is_absolute() or ".." in p.parts or path.startswith(".."):
        raise SourceError(f"volume {volume!r}: path {path!r} must be relative, without '..'")
    return str(p)


def volume_files(volume: pb.Volume, sources: Sources, namespace: str) -> dict[str, VolumeFile]:
    """Relative path -> file of a configMap/secret volume (empty for an optional one whose
    object is missing)."""
    kind = "ConfigMap" if volume.kind == "configMap" else "Secret"
    obj = _object(sources, kind, volume.source_name, namespace)
    mode = volume.default_mode if volume.HasField("default_mode") else DEFAULT_MODE
    if obj is None:
        if volume.optional:
            return {}
        raise SourceError(
            f'MountVolume.SetUp failed for volume "{volume.name}": {kind.lower()} '
            f'"{volume.source_name}" not found'
        )
    if not volume.key_items:
        return {_relative(k, volume.name): VolumeFile(v, mode) for k, v in obj.data.items()}
    out = {}
    for item in volume.key_items:
        if item.key not in obj.data:
            if volume.optional:
                continue
            raise SourceError(
                f'MountVolume.SetUp failed for volume "{volume.name}": {kind.lower()} '
                f"references non-existent config key: {item.key}"
            )
        out[_relative(item.path, volume.name)] = VolumeFile(
            obj.data[item.key], item.mode if item.HasField("mode") else mode
        )
    return out


def sources_version(sources: Sources) -> tuple[tuple[str, str, bool, int], ...]:
    """What changes when any object changes (compare to decide whether to rewrite)."""
    return tuple(sorted((k, n, o.found, o.resource_version) for (k, n), o in sources.items()))


def as_sources(reply: pb.PodSources) -> dict[tuple[str, str], pb.SourceObject]:
    """By (kind, name); the ServiceAccount token, if any, under TOKEN_KEY."""
    return {TOKEN_KEY if o.kind == TOKEN_KIND else (o.kind, o.name): o for o in reply.objects}


def token_due(token: pb.SourceObject | None, now: float) -> bool:
    """Does the pod need a (new) token: none yet, or 80 % of its lifetime has passed (the
    kubelet's token manager; a pod that mounts none never does)?"""
    if token is None:
        return True
    if not token.found:
        return False
    issued = token.expiration_unix - token.expiration_seconds
    return now >= issued + REFRESH_FRACTION * token.expiration_seconds
