"""ReplicaSet controller (pkg/controller/replicaset/replica_set.go).

Keeps ``spec.replicas`` active pods per ReplicaSet.  Pods are named
``<replicaset>-<5 chars>`` (generateName with apimachinery's rand.String alphabet; the RNG is
seeded so tests are repeatable) and carry a controller ownerReference.  Scaling down deletes
the least valuable pods first, in the order of controller.ActivePods: unscheduled before
scheduled, Pending before Unknown before Running, not ready before ready, newer before older.
A pod that disappears (deleted, evicted) is simply missing on the next sync and is replaced.
"""

from __future__ import annotations

import copy
from typing import Any

from knemu.apiserver.controllers.common import (
    Context,
    Obj,
    create_pod,
    delete_quietly,
    group_by_controller,
    is_active,
    is_pod_ready,
    labels_of,
    meta,
    name,
    namespace,
    owner_reference,
    uid,
)
from knemu.apiserver.meta import naming
from knemu.apiserver.nodes import condition
from knemu.errors import KnemuError

BURST_REPLICAS = 500  # replicaset controller's burstReplicas: most pods created per sync
_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def deletion_rank(pod: Obj) -> tuple[Any, ...]:
    """Sort key: the pods to delete first come first (controller.ActivePods ordering)."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    ready_cond = condition(pod, "Ready") or {}
    restarts = sum(int(c.get("restartCount") or 0) for c in status.get("containerStatuses") or [])
    return (
        bool(spec.get("nodeName")),
        _PHASE_RANK.get(str(status.get("phase")), 0),
        is_pod_ready(pod),
        # ready for a shorter time first (a later transition sorts first)
        _negated(str(ready_cond.get("lastTransitionTime") or "")),
        -restarts,
        _negated(str(meta(pod).get("creationTimestamp") or "")),
        name(pod),
    )


def _negated(text: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in text)


def is_available(pod: Obj, min_ready_s: int, now: float) -> bool:
    """Ready for at least minReadySeconds (podutil.IsPodAvailable)."""
    if not is_pod_ready(pod):
        return False
    if min_ready_s <= 0:
        return True
    since = naming.parse_rfc3339((condition(pod, "Ready") or {}).get("lastTransitionTime"))
    return since is not None and since + min_ready_s <= now


class ReplicaSetController:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._reported_failures: set[tuple[str, str]] = set()
        self._deadline: float | None = None

    def next_deadline(self) -> float | None:
        """When a pod becomes available (minReadySeconds), if one is waiting."""
        return self._deadline

    def sync(self, now: float) -> None:
        self._deadline = None
        pods = group_by_controller(self._ctx.list("Pod"))
        sets = self._ctx.list("ReplicaSet")
        alive = {uid(rs) for rs in sets}
        self._reported_failures = {k for k in self._reported_failures if k[0] in alive}
        for rs in sets:
            if meta(rs).get("deletionTimestamp") is None:
                self._sync_one(rs, pods.get(uid(rs), []), now)

    def _sync_one(self, rs: Obj, owned: list[Obj], now: float) -> None:
        active = [p for p in owned if is_active(p)]
        want = int((rs.get("spec") or {}).get("replicas", 1))
        diff = len(active) - want
        if diff < 0:
            active += self._create_pods(rs, min(-diff, BURST_REPLICAS), now)
        elif diff > 0:
            # at most burstReplicas per sync, as upstream; a spent step budget stops sooner
            doomed = sorted(active, key=deletion_rank)[: min(diff, BURST_REPLICAS)]
            gone: set[int] = set()
            for pod in doomed:
                if delete_quietly(self._ctx.store, pod, now):
                    self._event(rs, "Normal", "SuccessfulDelete", f"Deleted pod: {name(pod)}", now)
                gone.add(id(pod))
                if self._ctx.over_budget():
                    break
            active = [p for p in active if id(p) not in gone]
        self._update_status(rs, active, now)

    def _create_pods(self, rs: Obj, count: int, now: float) -> list[Obj]:
        """Up to ``count`` pods in slow-start batches of 1, 2, 4, ... (controller.slowStartBatch):
        an error ends the sync, so a ReplicaSet whose pods all fail costs one attempt, not
        ``count``.  A spent step budget also ends it; the next sync creates the rest."""
        created: list[Obj] = []
        batch = 1
        while len(created) < count:
            size = min(batch, count - len(created))
            if not self._create_batch(rs, size, now, created) or self._ctx.over_budget():
                break
            batch *= 2
        return created

    def _create_batch(self, rs: Obj, size: int, now: float, created: list[Obj]) -> bool:
        for _ in range(size):
            try:
                pod = self._create_pod(rs, now)
            except KnemuError as exc:
                # once per ReplicaSet generation: the message names a fresh pod each time
                key = (uid(rs), f"{meta(rs).get('generation')}/{type(exc).__name__}")
                if key not in self._reported_failures:
                    self._reported_failures.add(key)
                    self._event(
                        rs, "Warning", "FailedCreate", f"Error creating: {exc.message}", now
                    )
                return False
            created.append(pod)
            self._event(rs, "Normal", "SuccessfulCreate", f"Created pod: {name(pod)}", now)
        return True

    def _create_pod(self, rs: Obj, now: float) -> Obj:
        template = copy.deepcopy((rs.get("spec") or {}).get("template") or {})
        tmeta = template.get("metadata") or {}
        pod_meta: Obj = {
            "namespace": namespace(rs),
            "labels": dict(tmeta.get("labels") or {}),
            "ownerReferences": [owner_reference(rs)],
        }
        if tmeta.get("annotations"):
            pod_meta["annotations"] = dict(tmeta["annotations"])
        pod: Obj = {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta}
        pod["spec"] = template.get("spec") or {}
        return create_pod(self._ctx, rs, pod, now)

    def _update_status(self, rs: Obj, active: list[Obj], now: float) -> None:
        spec = rs.get("spec") or {}
        min_ready = int(spec.get("minReadySeconds") or 0)
        template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        available = [p for p in active if is_available(p, min_ready, now)]
        for pod in active:
            if is_pod_ready(pod) and pod not in available:
                since = naming.parse_rfc3339(
                    (condition(pod, "Ready") or {}).get("lastTransitionTime")
                )
                if since is not None:
                    due = since + min_ready
                    self._deadline = due if self._deadline is None else min(self._deadline, due)
        status = {
            "replicas": len(active),
            "fullyLabeledReplicas": sum(
                1 for p in active if template_labels.items() <= labels_of(p).items()
            ),
            "readyReplicas": sum(1 for p in active if is_pod_ready(p)),
            "availableReplicas": len(available),
            "observedGeneration": meta(rs).get("generation", 1),
        }
        if rs.get("status") != status:
            rs["status"] = status
            self._ctx.store.update(rs, now)

    def _event(self, rs: Obj, etype: str, reason: str, message: str, now: float) -> None:
        self._ctx.recorder.record(
            rs, etype, reason, message, now, component="replicaset-controller"
        )
