"""GetPodSources: the ConfigMaps and Secrets a pod names, for the node the pod is bound to.

The Node authorizer's rule (https://kubernetes.io/docs/reference/access-authn-authz/node/):
a kubelet may read a ConfigMap or Secret only when a pod bound to its node references it.
So a request names the pod, and the answer carries exactly the objects that pod's spec names
(volumes, env valueFrom, envFrom of its containers and init containers) in its namespace,
and only when the pod is bound to the requesting node.  When the node asks for it, the answer
also carries the pod's ServiceAccount token (TokenRequest bound to the pod, an hour long) and
the cluster's CA, the files of the kubelet's ``kube-api-access`` volume, unless
``automountServiceAccountToken`` is false on the pod or its ServiceAccount.  Pure functions of
stored JSON and the token issuer.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from knemu.apiserver.grpc_api.fields import field_list as _list, field_map as _map
from knemu.errors import Forbidden, NotFound
from knemu.proto import knemu_pb2 as pb

Obj = Mapping[str, Any]
Getter = Callable[[str, str, str], Obj | None]  # (kind, namespace, name) -> stored object
KINDS = ("ConfigMap", "Secret")
TOKEN_KIND = "ServiceAccountToken"
TOKEN_EXPIRATION_S = 3600  # the kubelet's projected token: an hour


@dataclass(frozen=True)
class PodTokens:
    """What issues a pod's token: (pod, expiration seconds) -> (JWT, expiry as Unix
    seconds), NotFound when its ServiceAccount does not exist; and the CA bundle (PEM)."""

    issue: Callable[[Obj, int], tuple[str, int]]
    ca_pem: bytes


def _name(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _container_references(container: Obj) -> set[tuple[str, str]]:
    refs: set[tuple[str, str]] = set()
    for var in map(_map, _list(container.get("env"))):
        value_from = _map(var.get("valueFrom"))
        for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
            refs.add((kind, _name(_map(value_from.get(key)).get("name"))))
    for source in map(_map, _list(container.get("envFrom"))):
        refs.add(("ConfigMap", _name(_map(source.get("configMapRef")).get("name"))))
        refs.add(("Secret", _name(_map(source.get("secretRef")).get("name"))))
    return refs


def pod_references(pod: Obj) -> list[tuple[str, str]]:
    """(kind, name) of every ConfigMap and Secret the pod's spec names, sorted."""
    spec = _map(pod.get("spec"))
    refs: set[tuple[str, str]] = set()
    for volume in map(_map, _list(spec.get("volumes"))):
        refs.add(("ConfigMap", _name(_map(volume.get("configMap")).get("name"))))
        refs.add(("Secret", _name(_map(volume.get("secret")).get("secretName"))))
    for key in ("containers", "initContainers"):
        for container in map(_map, _list(spec.get(key))):
            refs |= _container_references(container)
    return sorted((kind, name) for kind, name in refs if name)


def _decoded(values: Any) -> dict[str, bytes]:
    out = {}
    for key, text in _map(values).items():
        try:
            out[str(key)] = base64.b64decode(text if isinstance(text, str) else "", validate=True)
        except (binascii.Error, ValueError):
            continue  # validation admits only base64; an undecodable value is left out
    return out


def source_object(kind: str, name: str, obj: Obj | None) -> pb.SourceObject:
    """The wire form of a ConfigMap (data as UTF-8, binaryData decoded) or a Secret (data
    decoded; admission has already merged stringData into data)."""
    out = pb.SourceObject(kind=kind, name=name, found=obj is not None)
    if obj is None:
        return out
    rv = _map(obj.get("metadata")).get("resourceVersion")
    out.resource_version = int(rv) if isinstance(rv, str) and rv.isdigit() else 0
    if kind == "ConfigMap":
        for key, text in _map(obj.get("data")).items():
            out.data[str(key)] = text.encode() if isinstance(text, str) else b""
        out.data.update(_decoded(obj.get("binaryData")))
    else:
        out.data.update(_decoded(obj.get("data")))
    return out


def service_account_name(pod: Obj) -> str:
    spec = _map(pod.get("spec"))
    return _name(spec.get("serviceAccountName")) or _name(spec.get("serviceAccount")) or "default"


def automount(pod: Obj, account: Obj | None) -> bool:
    """automountServiceAccountToken: the pod's when set, else its ServiceAccount's, else true."""
    for value in (_map(pod.get("spec")).get("automountServiceAccountToken"),
                  _map(account).get("automountServiceAccountToken")):  # fmt: skip
        if isinstance(value, bool):
            return value
    return True


def token_object(get: Getter, pod: Obj, tokens: PodTokens) -> pb.SourceObject:
    """The pod's token, CA and namespace (found=False: nothing is to be mounted); NotFound
    when its ServiceAccount does not exist (the kubelet cannot start it then either)."""
    namespace = _name(_map(pod.get("metadata")).get("namespace")) or "default"
    name = service_account_name(pod)
    out = pb.SourceObject(kind=TOKEN_KIND, name=name)
    if not automount(pod, get("ServiceAccount", namespace, name)):
        return out
    token, expiry = tokens.issue(pod, TOKEN_EXPIRATION_S)
    out.found = True
    out.resource_version = expiry - TOKEN_EXPIRATION_S
    out.expiration_unix, out.expiration_seconds = expiry, TOKEN_EXPIRATION_S
    out.data.update(token=token.encode(), namespace=namespace.encode())
    out.data["ca.crt"] = tokens.ca_pem
    return out


def pod_sources(
    get: Getter, request: pb.PodSourcesRequest, tokens: PodTokens | None = None
) -> pb.PodSources:
    """The answer to GetPodSources; NotFound for a pod that is gone (or has another uid),
    Forbidden for a pod bound to another node.  A token is issued only when the request asks
    for one and ``tokens`` is given."""
    pod = get("Pod", request.namespace, request.pod_name)
    meta = _map(pod.get("metadata")) if pod is not None else {}
    if pod is None or (request.pod_uid and meta.get("uid") != request.pod_uid):
        raise NotFound(
            f"pod {request.namespace}/{request.pod_name} (uid {request.pod_uid or 'any'}) "
            "does not exist; the node should stop it"
        )
    bound = _map(pod.get("spec")).get("nodeName")
    if not request.node_name or bound != request.node_name:
        raise Forbidden(
            f"node {request.node_name!r} cannot read the ConfigMaps and Secrets of pod "
            f"{request.namespace}/{request.pod_name}: the pod is not bound to it (a node sees "
            "only its own pods' objects)"
        )
    reply = pb.PodSources(
        objects=[
            source_object(kind, name, get(kind, request.namespace, name))
            for kind, name in pod_references(pod)
        ]
    )
    if request.service_account_token and tokens is not None:
        reply.objects.append(token_object(get, pod, tokens))
    return reply
