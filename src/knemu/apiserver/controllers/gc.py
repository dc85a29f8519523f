"""Garbage collection (https://kubernetes.io/docs/concepts/architecture/garbage-collection/).

* Owner references: an object all of whose owners are gone (no object of that kind and name
  with that uid) is deleted, as the garbage collector does with background cascading
  deletion; deleting a Deployment thus removes its ReplicaSets, then their pods, and deleting
  a Service removes its EndpointSlices.
* PodGC: pods bound to a Node that has not existed for 40 s (podgc's quarantineTime, so a pod
  pinned to a node that is still registering survives) are deleted as orphans.
"""

from __future__ import annotations

from knemu.apiserver.controllers.common import (
    Context,
    Obj,
    delete_quietly,
    meta,
    name,
    namespace,
    uid,
)
from knemu.apiserver.storage.store import CLUSTER_SCOPED_KINDS

QUARANTINE_S = 40.0  # pkg/controller/podgc quarantineTime
DEPENDENT_KINDS = (
    "ReplicaSet",
    "DaemonSet",
    "ControllerRevision",
    "Pod",
    "EndpointSlice",
    "Endpoints",
    "Service",
    "Deployment",
)


class GarbageCollector:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._missing_since: dict[str, float] = {}  # pod uid -> first seen without its node

    def next_deadline(self) -> float | None:
        """When the first orphaned pod's quarantine ends."""
        first = min(self._missing_since.values(), default=None)
        return None if first is None else first + QUARANTINE_S

    def sync(self, now: float) -> None:
        for kind in DEPENDENT_KINDS:
            for obj in self._ctx.list(kind):
                refs = meta(obj).get("ownerReferences") or []
                if refs and not any(self._owner_exists(obj, ref) for ref in refs):
                    delete_quietly(self._ctx.store, obj, now)
                    if self._ctx.over_budget():
                        return  # the step's time is spent: the next sync goes on
        self._orphaned_pods(now)

    def _owner_exists(self, obj: Obj, ref: Obj) -> bool:
        kind = str(ref.get("kind", ""))
        ns = "" if kind in CLUSTER_SCOPED_KINDS else namespace(obj)
        owner = self._ctx.store.get(kind, ns, str(ref.get("name", "")))
        return owner is not None and uid(owner) == ref.get("uid")

    def _orphaned_pods(self, now: float) -> None:
        store = self._ctx.store
        nodes = {name(n) for n in self._ctx.list("Node")}
        missing: dict[str, float] = {}
        for pod in self._ctx.list("Pod"):
            node_name = (pod.get("spec") or {}).get("nodeName")
            if not node_name or node_name in nodes:
                continue
            since = missing[uid(pod)] = self._missing_since.get(uid(pod), now)
            if now < since + QUARANTINE_S:
                continue
            del missing[uid(pod)]
            if delete_quietly(store, pod, now):
                message = (
                    f"Deleted pod {namespace(pod)}/{name(pod)}: its node {node_name} no longer "
                    "exists"
                )
                self._ctx.recorder.record(
                    pod, "Normal", "PodGCOrphaned", message, now, component="pod-garbage-collector"
                )
        self._missing_since = missing
