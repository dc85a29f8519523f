"""Admission: what the api-server does to an object between the request and the store.

The order follows kube-apiserver's request pipeline
(https://kubernetes.io/docs/reference/access-authn-authz/extensible-admission-controllers/):

1. normalise kind and apiVersion (canonical kinds of docs/INTERFACES.md; ``svc``, ``pods``,
   ``deployment`` ... are accepted and rewritten), default the namespace to "default";
2. check the namespace exists (the NamespaceLifecycle plugin: NotFound, create it first);
3. reset status on create (status belongs to controllers and nodes); on update the caller
   has already split spec and status (REST: main resource vs /status subresource);
4. check every known field's type (validation/shapes.py: ``spec.tolerations: [5]`` is
   422, never stored), default (defaults.py) and validate (the validation package),
   raising errors.Invalid with every field error at once;
5. allocate: ClusterIP and NodePorts for Services (knemu.apiserver.ipam).

Admission never writes the object itself; the caller stores what it returns.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from typing import Any

from knemu.apiserver import ipam
from knemu.apiserver.admission import config_defaults
from knemu.apiserver.admission.defaults import apply_defaults
from knemu.apiserver.meta import naming
from knemu.apiserver.recorder import EventRecorder
from knemu.apiserver.storage.store import CLUSTER_SCOPED_KINDS, Store
from knemu.apiserver.validation import common as v, config as cfg, ingress, rbac
from knemu.apiserver.validation.apps import (
    validate_apps_update,
    validate_controller_revision,
    validate_controller_revision_update,
    validate_daemon_set,
    validate_deployment,
    validate_replica_set,
)
from knemu.apiserver.validation.netpol import validate_network_policy
from knemu.apiserver.validation.pod import validate_pod, validate_pod_update
from knemu.apiserver.validation.service import validate_service, validate_service_update
from knemu.apiserver.validation.shapes import check_shape
from knemu.config import ApiServerConfig
from knemu.errors import FieldError, Invalid, NotFound

Obj = dict[str, Any]

API_VERSIONS = {
    "Namespace": "v1",
    "Node": "v1",
    "Pod": "v1",
    "Service": "v1",
    "Endpoints": "v1",
    "Event": "v1",
    "EndpointSlice": "discovery.k8s.io/v1",
    "Deployment": "apps/v1",
    "ReplicaSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "ControllerRevision": "apps/v1",
    "NetworkPolicy": "networking.k8s.io/v1",
    **cfg.API_VERSIONS,
    **rbac.API_VERSIONS,
    **ingress.API_VERSIONS,
}
# kubectl's short names and plurals (kubectl api-resources).
_SHORT_NAMES = {
    "ns": "Namespace",
    "no": "Node",
    "po": "Pod",
    "svc": "Service",
    "ep": "Endpoints",
    "ev": "Event",
    "deploy": "Deployment",
    "rs": "ReplicaSet",
    "ds": "DaemonSet",
    "netpol": "NetworkPolicy",
    **cfg.SHORT_NAMES,
    **rbac.SHORT_NAMES,
    **ingress.SHORT_NAMES,
}
VALIDATORS: dict[str, Callable[[Obj], list[FieldError]]] = {
    "Namespace": v.validate_namespace,
    "Node": v.validate_node,
    "Event": v.validate_event,
    "Endpoints": v.validate_endpoints,
    "EndpointSlice": v.validate_endpoint_slice,
    "NetworkPolicy": validate_network_policy,
    "Pod": validate_pod,
    "Service": validate_service,
    "Deployment": validate_deployment,
    "ReplicaSet": validate_replica_set,
    "DaemonSet": validate_daemon_set,
    "ControllerRevision": validate_controller_revision,
    **cfg.VALIDATORS,
    **rbac.VALIDATORS,
    **ingress.VALIDATORS,
}
UPDATE_VALIDATORS: dict[str, Callable[[Obj, Obj], list[FieldError]]] = {
    "Pod": validate_pod_update,
    "Service": validate_service_update,
    "Deployment": validate_apps_update,
    "ReplicaSet": validate_apps_update,
    "DaemonSet": validate_apps_update,
    "ControllerRevision": validate_controller_revision_update,
    **cfg.UPDATE_VALIDATORS,
    **rbac.UPDATE_VALIDATORS,
    **ingress.UPDATE_VALIDATORS,
}


def canonical_kind(kind: Any, name: str = "") -> str:
    """The canonical kind for ``kind`` (any case, plural or short name); Invalid if unknown."""
    text = str(kind or "")
    lower = {k.lower(): k for k in API_VERSIONS}
    low = text.lower()
    plural_y = low[:-3] + "y" if low.endswith("ies") else low  # networkpolicies
    for candidate in (low, low.removesuffix("s"), low.removesuffix("es"), plural_y):
        if candidate in lower:
            return lower[candidate]
    if text.lower() in _SHORT_NAMES:
        return _SHORT_NAMES[text.lower()]
    known = ", ".join(sorted(API_VERSIONS))
    if not text:
        raise Invalid("object", name, [v.required("kind", f"set the object's kind ({known})")])
    detail = f"Unsupported value: {text!r}: knemu does not know this kind; known kinds: {known}"
    raise Invalid(text, name, [FieldError("kind", detail, "FieldValueNotSupported")])


def _drop_type_dependent_fields(old_spec: Any, new_spec: dict[str, Any]) -> None:
    """Changing a Service's type clears what only the old type used, when the new object
    still carries the old values (pkg/registry/core/service dropTypeDependentFields)."""
    new_type, old_type = new_spec.get("type", "ClusterIP"), old_spec.get("type")
    if new_type == old_type:
        return
    if new_type in ("ClusterIP", "ExternalName"):
        old_ports = {
            (p.get("port"), p.get("protocol")): p for p in v.as_list(old_spec.get("ports"))
        }
        for port in v.as_list(new_spec.get("ports")):
            old_port = old_ports.get((port.get("port"), port.get("protocol")), {})
            if port.get("nodePort") and port.get("nodePort") == old_port.get("nodePort"):
                del port["nodePort"]
        for key in ("externalTrafficPolicy", "allocateLoadBalancerNodePorts"):
            if new_spec.get(key) == old_spec.get(key):
                new_spec.pop(key, None)
    if new_type == "ExternalName":
        for key in (
            "clusterIP",
            "clusterIPs",
            "ipFamilies",
            "ipFamilyPolicy",
            "internalTrafficPolicy",
        ):
            if new_spec.get(key) == old_spec.get(key):
                new_spec.pop(key, None)


def validate(obj: Obj) -> list[FieldError]:
    return VALIDATORS[str(obj["kind"])](obj)


class Admission:
    """normalise -> namespace check -> default -> validate -> allocate (see module docstring)."""

    def __init__(
        self,
        store: Store,
        config: ApiServerConfig,
        recorder: EventRecorder | None = None,
        seed: int = 0,
    ) -> None:
        self._store = store
        self._config = config
        self._recorder = recorder or EventRecorder(store)
        self._rng = random.Random(seed)

    @property
    def config(self) -> ApiServerConfig:
        return self._config

    # ---- public ------------------------------------------------------------------------------

    def admit_create(self, obj: Obj, now: float) -> Obj:
        """The object to store for a create request; raises Invalid, NotFound, Exhausted."""
        obj = self._normalise(obj)
        self._raise_if(obj, check_shape(obj))
        self._check_namespace(obj)
        self._reset_status(obj)
        apply_defaults(obj, self._config.timings.eviction_toleration_s)
        config_defaults.apply_defaults(obj)
        self._raise_if(obj, validate(obj))
        self._allocate(obj, None, now)
        return obj

    def admit_update(self, old: Obj, new: Obj, now: float) -> Obj:
        """The object to store for an update of ``old``.  Status is taken as given: the
        caller (REST) keeps the stored status for the main resource and the stored spec for
        the status subresource, as Kubernetes' status subresource split does."""
        new = self._normalise(new)
        self._raise_if(new, check_shape(new))
        kind, name = new["kind"], new["metadata"]["name"]
        old_key = (old.get("kind"), old["metadata"].get("name"), old["metadata"].get("namespace"))
        if old_key != (kind, name, new["metadata"].get("namespace")):
            detail = "kind, name and namespace of an object cannot change; create a new object"
            raise Invalid(kind, name, [v.invalid("metadata.name", name, detail)])
        self._carry_allocations(old, new)
        apply_defaults(new, self._config.timings.eviction_toleration_s)
        config_defaults.apply_defaults(new)
        errs = validate(new)
        if kind in UPDATE_VALIDATORS:
            errs += UPDATE_VALIDATORS[kind](old, new)
        self._raise_if(new, errs)
        self._allocate(new, old, now)
        return new

    # ---- steps -------------------------------------------------------------------------------

    def _normalise(self, obj: Obj) -> Obj:
        if not isinstance(obj, dict):
            raise Invalid("object", "", [v.invalid("", obj, "an object must be a JSON/YAML map")])
        obj = copy.deepcopy(obj)
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            meta = obj["metadata"] = {}
        kind = canonical_kind(obj.get("kind"), str(meta.get("name") or ""))
        obj["kind"] = kind
        api_version = obj.setdefault("apiVersion", API_VERSIONS[kind])
        if api_version != API_VERSIONS[kind]:
            err = v.not_supported("apiVersion", api_version, (API_VERSIONS[kind],))
            raise Invalid(kind, str(meta.get("name") or ""), [err])
        if kind in CLUSTER_SCOPED_KINDS:
            meta.pop("namespace", None)
        elif not meta.get("namespace"):
            meta["namespace"] = "default"
        if not meta.get("name") and isinstance(meta.get("generateName"), str):
            meta["name"] = self._generate_name(kind, meta)
        return obj

    def _generate_name(self, kind: str, meta: Obj) -> str:
        prefix = str(meta["generateName"])
        for _ in range(16):
            name = prefix + naming.random_suffix(self._rng)
            if self._store.get(kind, str(meta.get("namespace") or ""), name) is None:
                return name
        return prefix + naming.random_suffix(self._rng, 10)

    def _check_namespace(self, obj: Obj) -> None:
        if obj["kind"] in CLUSTER_SCOPED_KINDS:
            return
        ns = obj["metadata"]["namespace"]
        if self._store.get("Namespace", "", ns) is None:
            raise NotFound(
                f'namespaces "{ns}" not found: create it first (kind: Namespace, '
                f"metadata.name: {ns}), then create {obj['kind']} "
                f'"{obj["metadata"].get("name", "")}" again'
            )

    @staticmethod
    def _reset_status(obj: Obj) -> None:
        kind = obj["kind"]
        if kind == "Pod":
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        elif kind in ("Deployment", "ReplicaSet", "DaemonSet"):
            obj["status"] = {}
        elif kind == "Service":
            # DEVIATION: a user's status.loadBalancer is kept (seed 002's LoadBalancer example
            # carries one); Kubernetes would drop it and wait for a cloud controller.
            lb = v.as_map(v.as_map(obj.get("status")).get("loadBalancer"))
            obj["status"] = {"loadBalancer": dict(lb)}

    @staticmethod
    def _carry_allocations(old: Obj, new: Obj) -> None:
        """Fields the server filled in that a re-applied manifest leaves empty."""
        old_spec, new_spec = v.as_map(old.get("spec")), new.get("spec")
        if not isinstance(new_spec, dict):
            return
        if new["kind"] == "Pod" and not new_spec.get("nodeName") and old_spec.get("nodeName"):
            new_spec["nodeName"] = old_spec["nodeName"]
        if new["kind"] == "Service":
            _drop_type_dependent_fields(old_spec, new_spec)
        if new["kind"] == "Service" and not new_spec.get("clusterIP"):
            same_family = (new_spec.get("type") == "ExternalName") == (
                old_spec.get("type") == "ExternalName"
            )
            if same_family and old_spec.get("clusterIP"):
                new_spec["clusterIP"] = old_spec["clusterIP"]
                new_spec["clusterIPs"] = old_spec.get("clusterIPs", [old_spec["clusterIP"]])

    def _allocate(self, obj: Obj, old: Obj | None, now: float) -> None:
        if obj["kind"] != "Service":
            return
        warning = ipam.assign_cluster_ip(self._store, self._config, obj)
        ipam.assign_node_ports(self._store, self._config, obj, old)
        ipam.assign_health_check_node_port(self._store, self._config, obj, old)
        if warning:
            self._recorder.record(obj, "Warning", "ClusterIPOutOfRange", warning, now)

    @staticmethod
    def _raise_if(obj: Obj, errs: list[FieldError]) -> None:
        if errs:
            raise Invalid(obj["kind"], str(obj["metadata"].get("name") or ""), errs)
