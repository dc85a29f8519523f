"""Deployment status and conditions (pkg/controller/deployment/sync.go calculateStatus).

Conditions follow "Deployment status" in the Kubernetes docs
(https://kubernetes.io/docs/concepts/workloads/controllers/deployment/#deployment-status):
Available (MinimumReplicasAvailable / MinimumReplicasUnavailable) and Progressing
(NewReplicaSetAvailable once complete, ReplicaSetUpdated while rolling).  Timestamps move only
when a condition changes, so a steady Deployment's status is written once.
"""

from __future__ import annotations

import copy
from typing import Any

from knemu.apiserver.meta import naming

Obj = dict[str, Any]


def _sum(sets: list[Obj], key: str) -> int:
    return sum(int((rs.get("status") or {}).get(key, 0)) for rs in sets)


def _condition(
    old: list[Obj], ctype: str, status: str, reason: str, message: str, now: float
) -> Obj:
    previous = next((c for c in old if c.get("type") == ctype), None)
    stamp = naming.rfc3339(now)
    cond = {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": stamp,
        "lastTransitionTime": stamp,
    }
    if previous is not None:
        if previous.get("status") == status:
            cond["lastTransitionTime"] = previous.get("lastTransitionTime", stamp)
        if (previous.get("status"), previous.get("reason"), previous.get("message")) == (
            status,
            reason,
            message,
        ):
            cond["lastUpdateTime"] = previous.get("lastUpdateTime", stamp)
    return cond


def deployment_status(
    deploy: Obj, new_rs: Obj | None, old: list[Obj], max_unavailable: int, now: float
) -> Obj:
    """The Deployment's status computed from its ReplicaSets."""
    desired = int(deploy["spec"].get("replicas", 1))
    every = [*old, *([new_rs] if new_rs is not None else [])]
    total_spec = sum(int((rs.get("spec") or {}).get("replicas", 0)) for rs in every)
    available = _sum(every, "availableReplicas")
    updated = int(((new_rs or {}).get("status") or {}).get("replicas", 0))
    previous = copy.deepcopy((deploy.get("status") or {}).get("conditions") or [])
    status: Obj = {
        "observedGeneration": deploy["metadata"].get("generation", 1),
        "replicas": _sum(every, "replicas"),
        "updatedReplicas": updated,
        "readyReplicas": _sum(every, "readyReplicas"),
        "availableReplicas": available,
        "unavailableReplicas": max(total_spec - available, 0),
    }
    collisions = (deploy.get("status") or {}).get("collisionCount")
    if collisions:
        status["collisionCount"] = collisions
    complete = updated == desired and available >= desired and status["replicas"] == desired
    status["conditions"] = [
        _available(previous, available >= desired - max_unavailable, now),
        _progressing(previous, new_rs, complete, now),
    ]
    return status


def _available(previous: list[Obj], enough: bool, now: float) -> Obj:
    if enough:
        message = "Deployment has minimum availability."
        return _condition(previous, "Available", "True", "MinimumReplicasAvailable", message, now)
    message = "Deployment does not have minimum availability."
    return _condition(previous, "Available", "False", "MinimumReplicasUnavailable", message, now)


def _progressing(previous: list[Obj], new_rs: Obj | None, complete: bool, now: float) -> Obj:
    if new_rs is None:
        message = "waiting for the new replica set to be created"
        return _condition(previous, "Progressing", "Unknown", "NewReplicaSetPending", message, now)
    rs_name = new_rs.get("metadata", {}).get("name", "")
    if complete:
        message = f'ReplicaSet "{rs_name}" has successfully progressed.'
        return _condition(previous, "Progressing", "True", "NewReplicaSetAvailable", message, now)
    message = f'ReplicaSet "{rs_name}" is progressing.'
    return _condition(previous, "Progressing", "True", "ReplicaSetUpdated", message, now)
