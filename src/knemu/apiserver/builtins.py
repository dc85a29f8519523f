"""Objects every cluster starts with (what kube-apiserver and kubeadm create).

* Namespaces default, kube-system, kube-public, kube-node-lease (kube-apiserver's
  system namespaces controller).
* ``default/kubernetes``: the api-server's own Service, the first address of the service CIDR,
  port "https" 443 -> 6443 (kube-apiserver's "bootstrap controller").  It has no selector;
  ``publish_endpoint`` gives it the api-server's own address and REST port, as kube-apiserver's
  endpoint reconciler does, so pods reach the api-server at 10.96.0.1:443 with in-cluster
  configuration (the node agents masquerade pod traffic to that address, ``dataplane.egress``).
* ``kube-system/kube-dns``: the tenth address of the service CIDR, ports dns 53/UDP, dns-tcp
  53/TCP, metrics 9153/TCP, labelled and selecting k8s-app=kube-dns, as kubeadm's CoreDNS
  addon installs it.  Node agents send its traffic to the node-local DNS forwarder.

* The default RBAC roles and bindings (``auth/defaults.py``).

``bootstrap`` is idempotent: objects that exist are left as they are (a restart keeps them).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from knemu.apiserver.admission.pipeline import Admission
from knemu.apiserver.auth.defaults import default_objects
from knemu.apiserver.storage.store import Store

Obj = dict[str, Any]
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def service_ip(service_cidr: str, offset: int) -> str:
    return str(ipaddress.ip_network(service_cidr).network_address + offset)


def builtin_objects(service_cidr: str) -> list[Obj]:
    namespaces: list[Obj] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
        for ns in SYSTEM_NAMESPACES
    ]
    kubernetes: Obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {"component": "apiserver", "provider": "kubernetes"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": service_ip(service_cidr, 1),
            "ports": [{"name": "https", "protocol": "TCP", "port": 443, "targetPort": 6443}],
        },
    }
    dns_labels = {
        "k8s-app": "kube-dns",
        "kubernetes.io/cluster-service": "true",
        "kubernetes.io/name": "CoreDNS",
    }
    kube_dns: Obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": dns_labels},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": service_ip(service_cidr, 10),
            "selector": {"k8s-app": "kube-dns"},
            "ports": [
                {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": 53},
                {"name": "dns-tcp", "protocol": "TCP", "port": 53, "targetPort": 53},
                {"name": "metrics", "protocol": "TCP", "port": 9153, "targetPort": 9153},
            ],
        },
    }
    return [*namespaces, kubernetes, kube_dns, *default_objects()]


_RECONCILED = ("rules", "roleRef", "subjects")
_AUTOUPDATE = "rbac.authorization.kubernetes.io/autoupdate"


def bootstrap(store: Store, admission: Admission, now: float) -> None:
    """Create the built-in namespaces, Services and default RBAC objects that do not exist
    yet; default roles and bindings a newer knemu changed are brought up to date, as
    kube-apiserver reconciles them, unless annotated ``autoupdate: "false"``."""
    for obj in builtin_objects(admission.config.service_cidr):
        meta = obj["metadata"]
        old = store.get(obj["kind"], meta.get("namespace", ""), meta["name"])
        if old is None:
            store.create(admission.admit_create(obj, now), now)
        elif _outdated_default(old, obj):
            new = {**old, **{k: obj[k] for k in _RECONCILED if k in obj}}
            store.update(admission.admit_update(old, new, now), now)


def _outdated_default(old: Obj, wanted: Obj) -> bool:
    if obj_labels(wanted).get("kubernetes.io/bootstrapping") != "rbac-defaults":
        return False
    annotations = old.get("metadata", {}).get("annotations") or {}
    if annotations.get(_AUTOUPDATE) == "false":
        return False
    return any(old.get(k) != wanted.get(k) for k in _RECONCILED if k in wanted)


def obj_labels(obj: Obj) -> dict[str, str]:
    labels = obj.get("metadata", {}).get("labels") or {}
    return labels if isinstance(labels, dict) else {}


def publish_endpoint(
    store: Store, admission: Admission, address: str, port: int, now: float
) -> None:
    """The ``kubernetes`` Service's EndpointSlice (and Endpoints): this api-server's address."""
    labels = {"kubernetes.io/service-name": "kubernetes",
              "endpointslice.kubernetes.io/managed-by": "knemu-apiserver"}  # fmt: skip
    meta = {"name": "kubernetes", "namespace": "default", "labels": labels}
    objs: list[Obj] = [
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": meta,
            "addressType": "IPv4",
            "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        },
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                # the slice above is written directly, as kube-apiserver does: no mirror
                "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"},
            },
            "subsets": [
                {
                    "addresses": [{"ip": address}],
                    "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
                }
            ],
        },
    ]
    for obj in objs:
        existing = store.get(obj["kind"], "default", "kubernetes")
        if existing is None:
            store.create(admission.admit_create(obj, now), now)
        elif any(existing.get(k) != obj[k] for k in obj if k not in ("metadata", "apiVersion")):
            store.update({**obj, "metadata": existing["metadata"]}, now)  # a new address
