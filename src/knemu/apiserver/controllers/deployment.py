"""Deployment controller (pkg/controller/deployment: sync.go, rolling.go, recreate.go).

Theory of operation.  A Deployment owns one ReplicaSet per pod template it has had.  The
"new" ReplicaSet is the one whose template (minus the ``pod-template-hash`` label) equals
the Deployment's; it is named ``<deployment>-<pod-template-hash>`` where the hash is FNV-32a of
the template (naming.template_hash), and carries the hash as a label on itself, its selector
and its pods so that ReplicaSets of different revisions never select each other's pods.
Every sync moves replicas from the old ReplicaSets to the new one:

* RollingUpdate: scale the new ReplicaSet up while the total stays within replicas+maxSurge,
  and the old ones down while at least replicas-maxUnavailable pods stay available
  (maxSurge rounds up, maxUnavailable down, as intstr.GetScaledValueFromIntOrPercent).
* Recreate: scale every old ReplicaSet to 0, wait until their pods are gone, then scale the
  new one up.

Old ReplicaSets at 0 replicas are kept as revision history up to revisionHistoryLimit.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from knemu.apiserver.controllers.common import (
    Context,
    Obj,
    delete_quietly,
    group_by_controller,
    is_active,
    meta,
    name,
    namespace,
    owner_reference,
    uid,
)
from knemu.apiserver.controllers.deployment_status import deployment_status
from knemu.apiserver.meta import naming
from knemu.errors import KnemuError

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"


def scaled_value(value: Any, total: int, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent."""
    if isinstance(value, int):
        return value
    percent = int(str(value).rstrip("%") or 0)
    exact = percent * total / 100
    return math.ceil(exact) if round_up else math.floor(exact)


def surge_and_unavailable(deploy: Obj) -> tuple[int, int]:
    """deploymentutil.ResolveFenceposts: never both zero."""
    spec = deploy["spec"]
    rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
    replicas = int(spec.get("replicas", 1))
    surge = scaled_value(rolling.get("maxSurge", "25%"), replicas, True)
    unavailable = scaled_value(rolling.get("maxUnavailable", "25%"), replicas, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, replicas)


def revision(rs: Obj) -> int:
    try:
        return int((meta(rs).get("annotations") or {}).get(REVISION, 0))
    except ValueError:
        return 0


def _template_without_hash(rs: Obj) -> Obj:
    template = copy.deepcopy((rs.get("spec") or {}).get("template") or {})
    tlabels = (template.get("metadata") or {}).get("labels")
    if isinstance(tlabels, dict):
        tlabels.pop(HASH_LABEL, None)
    return template


def spec_replicas(rs: Obj) -> int:
    return int((rs.get("spec") or {}).get("replicas", 0))


def available(rs: Obj) -> int:
    return int((rs.get("status") or {}).get("availableReplicas", 0))


class DeploymentController:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def sync(self, now: float) -> None:
        sets = group_by_controller(self._ctx.list("ReplicaSet"))
        pods = group_by_controller(self._ctx.list("Pod"))
        for deploy in self._ctx.list("Deployment"):
            if meta(deploy).get("deletionTimestamp") is None:
                owned = sorted(sets.get(uid(deploy), []), key=lambda rs: (revision(rs), name(rs)))
                self._sync_one(deploy, owned, pods, now)

    def _sync_one(
        self, deploy: Obj, owned: list[Obj], pods: dict[str, list[Obj]], now: float
    ) -> None:
        template = deploy["spec"].get("template") or {}
        new_rs = next((rs for rs in owned if _template_without_hash(rs) == template), None)
        old = [rs for rs in owned if rs is not new_rs]
        if deploy["spec"].get("paused"):  # kubectl rollout pause: no rollout, status only
            self._write_status(deploy, new_rs, old, now)
            return
        if new_rs is not None:
            self._bump_revision(new_rs, old, now)
        if (deploy["spec"].get("strategy") or {}).get("type") == "Recreate":
            new_rs = self._recreate(deploy, new_rs, old, pods, now)
        else:
            new_rs = self._rolling(deploy, new_rs, old, now)
        if new_rs is not None and self._complete(deploy, new_rs, old):
            self._cleanup(deploy, old, now)
        self._write_status(deploy, new_rs, old, now)

    # ---- strategies -------------------------------------------------------------------------

    def _rolling(self, deploy: Obj, new_rs: Obj | None, old: list[Obj], now: float) -> Obj | None:
        if new_rs is None:
            new_rs = self._create_rs(deploy, old, now)
            if new_rs is None:
                return None
        desired = int(deploy["spec"].get("replicas", 1))
        surge, unavailable = surge_and_unavailable(deploy)
        current = spec_replicas(new_rs)
        if current > desired:
            self._scale(deploy, new_rs, desired, now)
        elif current < desired:
            total = current + sum(spec_replicas(rs) for rs in old)
            target = current + max(0, min(desired + surge - total, desired - current))
            if target != current:
                self._scale(deploy, new_rs, target, now)
                return new_rs
        self._scale_down_old(deploy, new_rs, old, desired - unavailable, now)
        return new_rs

    def _scale_down_old(
        self, deploy: Obj, new_rs: Obj, old: list[Obj], min_available: int, now: float
    ) -> None:
        """reconcileOldReplicaSets: unhealthy old pods first, then available ones."""
        all_pods = spec_replicas(new_rs) + sum(spec_replicas(rs) for rs in old)
        new_unavailable = spec_replicas(new_rs) - available(new_rs)
        budget = all_pods - min_available - new_unavailable
        if budget <= 0 or not any(spec_replicas(rs) for rs in old):
            return
        for rs in old:  # cleanupUnhealthyReplicas
            unhealthy = spec_replicas(rs) - available(rs)
            if budget <= 0 or unhealthy <= 0:
                continue
            cut = min(budget, unhealthy)
            budget -= cut
            self._scale(deploy, rs, spec_replicas(rs) - cut, now)
        avail = available(new_rs) + sum(min(available(rs), spec_replicas(rs)) for rs in old)
        excess = avail - min_available
        for rs in old:  # scaleDownOldReplicaSetsForRollingUpdate
            if excess <= 0:
                break
            cut = min(spec_replicas(rs), excess)
            if cut:
                excess -= cut
                self._scale(deploy, rs, spec_replicas(rs) - cut, now)

    def _recreate(
        self,
        deploy: Obj,
        new_rs: Obj | None,
        old: list[Obj],
        pods: dict[str, list[Obj]],
        now: float,
    ) -> Obj | None:
        for rs in old:
            if spec_replicas(rs):
                self._scale(deploy, rs, 0, now)
        if any(is_active(p) for rs in old for p in pods.get(uid(rs), [])):
            return new_rs  # wait until the old pods are gone
        if new_rs is None:
            new_rs = self._create_rs(deploy, old, now)
        if new_rs is not None:
            self._scale(deploy, new_rs, int(deploy["spec"].get("replicas", 1)), now)
        return new_rs

    # ---- ReplicaSets ------------------------------------------------------------------------

    def _create_rs(self, deploy: Obj, old: list[Obj], now: float) -> Obj | None:
        collisions = int((deploy.get("status") or {}).get("collisionCount", 0))
        template_hash = naming.template_hash(deploy["spec"].get("template"), collisions)
        rev = max((revision(r) for r in old), default=0) + 1
        rs = self._replica_set(deploy, template_hash, rev)
        store = self._ctx.store
        if store.get("ReplicaSet", namespace(deploy), name(rs)) is not None:
            # a ReplicaSet of that name that is not ours: bump collisionCount (sync.go)
            deploy.setdefault("status", {})["collisionCount"] = collisions + 1
            deploy.update(store.update(deploy, now))
            return None
        try:
            return store.create(self._ctx.admission.admit_create(rs, now), now)
        except KnemuError as exc:
            message = f"Failed to create new replica set: {exc.message}"
            self._event(deploy, "Warning", "FailedCreate", message, now)
            return None

    def _replica_set(self, deploy: Obj, template_hash: str, rev: int) -> Obj:
        """The new ReplicaSet: the template, selector and labels plus pod-template-hash."""
        spec = deploy["spec"]
        template = copy.deepcopy(spec.get("template") or {})
        tmeta = template.setdefault("metadata", {})
        tmeta["labels"] = {**(tmeta.get("labels") or {}), HASH_LABEL: template_hash}
        selector = copy.deepcopy(spec["selector"])
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), HASH_LABEL: template_hash}
        rs: Obj = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{name(deploy)}-{template_hash}",
                "namespace": namespace(deploy),
                "labels": dict(tmeta["labels"]),
                "annotations": self._annotations(deploy, rev),
                "ownerReferences": [owner_reference(deploy)],
            },
            "spec": {"replicas": 0, "selector": selector, "template": template},
        }
        if spec.get("minReadySeconds"):
            rs["spec"]["minReadySeconds"] = spec["minReadySeconds"]
        return rs

    def _bump_revision(self, new_rs: Obj, old: list[Obj], now: float) -> None:
        """A rollback to an older template makes that ReplicaSet the newest revision."""
        newest = max((revision(rs) for rs in old), default=0)
        if revision(new_rs) <= newest:
            meta(new_rs).setdefault("annotations", {})[REVISION] = str(newest + 1)
            new_rs.update(self._ctx.store.update(new_rs, now))

    def _annotations(self, deploy: Obj, rev: int) -> dict[str, str]:
        surge, _ = surge_and_unavailable(deploy)
        replicas = int(deploy["spec"].get("replicas", 1))
        return {
            REVISION: str(rev),
            "deployment.kubernetes.io/desired-replicas": str(replicas),
            "deployment.kubernetes.io/max-replicas": str(replicas + surge),
        }

    def _scale(self, deploy: Obj, rs: Obj, replicas: int, now: float) -> None:
        before = spec_replicas(rs)
        if before == replicas:
            return
        rs["spec"]["replicas"] = replicas
        meta(rs).setdefault("annotations", {}).update(
            {k: v for k, v in self._annotations(deploy, revision(rs)).items() if k != REVISION}
        )
        rs.update(self._ctx.store.update(rs, now))
        direction = "up" if replicas > before else "down"
        message = f"Scaled {direction} replica set {name(rs)} to {replicas} from {before}"
        self._event(deploy, "Normal", "ScalingReplicaSet", message, now)

    def _complete(self, deploy: Obj, new_rs: Obj, old: list[Obj]) -> bool:
        desired = int(deploy["spec"].get("replicas", 1))
        status = new_rs.get("status") or {}
        return (
            spec_replicas(new_rs) == desired
            and int(status.get("availableReplicas", 0)) >= desired
            and not any(spec_replicas(rs) or (rs.get("status") or {}).get("replicas") for rs in old)
        )

    def _cleanup(self, deploy: Obj, old: list[Obj], now: float) -> None:
        """Delete the oldest empty ReplicaSets beyond revisionHistoryLimit."""
        limit = int(deploy["spec"].get("revisionHistoryLimit", 10))
        empty = [rs for rs in old if not spec_replicas(rs)]
        for rs in empty[: max(0, len(empty) - limit)]:
            delete_quietly(self._ctx.store, rs, now)

    def _write_status(self, deploy: Obj, new_rs: Obj | None, old: list[Obj], now: float) -> None:
        status = deployment_status(deploy, new_rs, old, surge_and_unavailable(deploy)[1], now)
        # The Deployment carries its newest ReplicaSet's revision (SetDeploymentRevision);
        # `kubectl rollout history/undo` read and restore it.
        rev = str(revision(new_rs)) if new_rs is not None else None
        annotations = meta(deploy).get("annotations") or {}
        stale = rev is not None and rev != "0" and annotations.get(REVISION) != rev
        if stale:
            meta(deploy)["annotations"] = {**annotations, REVISION: rev}
        if deploy.get("status") != status or stale:
            deploy["status"] = status
            self._ctx.store.update(deploy, now)

    def _event(self, deploy: Obj, etype: str, reason: str, message: str, now: float) -> None:
        self._ctx.recorder.record(
            deploy, etype, reason, message, now, component="deployment-controller"
        )
