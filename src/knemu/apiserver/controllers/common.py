"""What every controller shares: its context, owner references, pod predicates.

Controllers are level-triggered (Kubernetes "Controllers",
https://kubernetes.io/docs/concepts/architecture/controller/): each ``sync(now)`` reads the
current objects from the store, compares them with what should exist, and writes only the
differences.  The store skips no-op updates, so a controller with nothing to do writes
nothing and the manager can tell when the cluster has gone quiet.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from knemu.apiserver.admission.pipeline import Admission
from knemu.apiserver.meta import naming
from knemu.apiserver.nodes import NodeRegistry, condition
from knemu.apiserver.recorder import EventRecorder
from knemu.apiserver.storage.store import Store
from knemu.apiserver.validation.shapes import check_shape
from knemu.config import ApiServerConfig
from knemu.errors import AlreadyExists, NotFound

Obj = dict[str, Any]
log = logging.getLogger("knemu.apiserver.controllers")


_MEMO_LIMIT = 200_000


def _never() -> bool:
    return False


@dataclass
class Context:
    store: Store
    config: ApiServerConfig
    recorder: EventRecorder
    admission: Admission
    registry: NodeRegistry
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    # The manager's time budget for this step: loops that write many objects (pod creation,
    # binding) stop early when it is spent and the next step carries on.
    over_budget: Callable[[], bool] = _never
    _lists: dict[str, tuple[int, list[Obj]]] = field(default_factory=dict)  # kind -> (rv, objs)
    _checked: dict[tuple[str, str, str], str] = field(default_factory=dict)  # key -> good rv
    _reported: set[tuple[str, str, str, str]] = field(default_factory=set)  # (key, rv) logged
    malformed: int = 0  # objects skipped because their shape is wrong (statistics)

    def list(self, kind: str) -> list[Obj]:
        """``store.list(kind)``, decoded once per version of that kind and shared by
        controllers.

        A write to ``kind`` drops its memo, so a controller never sees a list older than the
        store; writes to other kinds (a Lease heartbeat, an Event) leave it alone.  Callers
        may mutate an object only to write it back.
        """
        version = self.store.kind_version(kind)
        memo = self._lists.get(kind)
        if memo is None or memo[0] != version:
            objs = [o for o in self.store.list(kind) if self._well_formed(kind, o)]
            memo = self._lists[kind] = (version, objs)
        return memo[1]

    def _well_formed(self, kind: str, obj: Obj) -> bool:
        """False (and one log line per object version) for an object of the wrong shape:
        one stored before shapes were checked must not stall every controller, so it is
        skipped and reported, as a Kubernetes controller skips what it cannot decode."""
        md = obj.get("metadata")
        if not isinstance(md, dict):
            md = {}
        key = (kind, str(md.get("namespace", "")), str(md.get("name", "")))
        rv = str(md.get("resourceVersion", ""))
        if self._checked.get(key) == rv:
            return True
        errs = check_shape(obj)
        if len(self._checked) > _MEMO_LIMIT or len(self._reported) > _MEMO_LIMIT:
            self._checked.clear()  # deleted objects' entries: start over, stay bounded
            self._reported.clear()
        if not errs:
            self._checked[key] = rv
            return True
        self.malformed += 1
        if (*key, rv) not in self._reported:
            self._reported.add((*key, rv))
            log.warning(
                "controllers skip %s %s/%s (resourceVersion %s): %s; fix or delete it",
                kind,
                key[1],
                key[2],
                rv,
                "; ".join(str(e) for e in errs[:3]),
            )
        return False


def meta(obj: Obj) -> Obj:
    value = obj.setdefault("metadata", {})
    assert isinstance(value, dict)
    return value


def uid(obj: Obj) -> str:
    return str(meta(obj).get("uid", ""))


def name(obj: Obj) -> str:
    return str(meta(obj).get("name", ""))


def namespace(obj: Obj) -> str:
    return str(meta(obj).get("namespace", ""))


def labels_of(obj: Obj) -> dict[str, str]:
    return {str(k): str(v) for k, v in (meta(obj).get("labels") or {}).items()}


def owner_reference(owner: Obj) -> Obj:
    """A controller ownerReference to ``owner`` (metav1.NewControllerRef)."""
    return {
        "apiVersion": owner.get("apiVersion", "v1"),
        "kind": owner["kind"],
        "name": name(owner),
        "uid": uid(owner),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controller_uid(obj: Obj) -> str | None:
    for ref in meta(obj).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return str(ref.get("uid", ""))
    return None


def group_by_controller(objs: list[Obj]) -> dict[str, list[Obj]]:
    groups: dict[str, list[Obj]] = {}
    for obj in objs:
        owner = controller_uid(obj)
        if owner:
            groups.setdefault(owner, []).append(obj)
    return groups


def is_terminating(obj: Obj) -> bool:
    return meta(obj).get("deletionTimestamp") is not None


def is_pod_ready(pod: Obj) -> bool:
    cond = condition(pod, "Ready")
    return cond is not None and cond.get("status") == "True"


def is_active(pod: Obj) -> bool:
    """controller.IsPodActive: not finished and not being deleted."""
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and not is_terminating(pod)


def delete_quietly(store: Store, obj: Obj, now: float) -> bool:
    """Delete ``obj``; False when someone else already did."""
    try:
        store.delete(str(obj["kind"]), namespace(obj), name(obj), now)
    except NotFound:
        return False
    return True


def create_pod(ctx: Context, owner: Obj, pod: Obj, now: float, tries: int = 16) -> Obj:
    """Admit and store ``pod`` named ``<owner>-<random suffix>`` (five characters, as
    rand.String(5); eight after a collision), as the ReplicaSet and DaemonSet controllers do."""
    pod_meta = pod["metadata"]
    for _ in range(tries):
        pod_meta["name"] = f"{name(owner)}-{naming.random_suffix(ctx.rng)}"
        if ctx.store.get("Pod", namespace(owner), pod_meta["name"]) is None:
            break
    try:
        return ctx.store.create(ctx.admission.admit_create(pod, now), now)
    except AlreadyExists:
        pod_meta["name"] = f"{name(owner)}-{naming.random_suffix(ctx.rng, 8)}"
        return ctx.store.create(ctx.admission.admit_create(pod, now), now)
