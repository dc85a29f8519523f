"""A DaemonSet's history as ControllerRevisions (pkg/controller/daemon/update.go
constructHistory, getPatch, cleanupHistory), what ``kubectl rollout history/undo ds`` read.

Each distinct pod template gets one ControllerRevision ``<daemonset>-<hash>`` (the hash the
pods carry as ``controller-revision-hash``) whose ``data`` is the patch that puts the template
back: ``{"spec": {"template": {..., "$patch": "replace"}}}``, and whose ``revision`` is 1 + the
highest so far.  Going back to an older template (``rollout undo``) renumbers its revision to
the newest rather than copying it.  Revisions beyond ``revisionHistoryLimit`` that no pod
runs any more are deleted, oldest first.
"""

from __future__ import annotations

import copy

from knemu.apiserver.controllers.common import (
    Context,
    Obj,
    controller_uid,
    delete_quietly,
    meta,
    name,
    namespace,
    owner_reference,
    uid,
)
from knemu.apiserver.meta import naming

HASH_LABEL = "controller-revision-hash"
CHANGE_CAUSE = "kubernetes.io/change-cause"


def revision_patch(ds: Obj) -> Obj:
    """getPatch: the DaemonSet's template, marked to replace whatever template is there."""
    template = copy.deepcopy((ds.get("spec") or {}).get("template") or {})
    template["$patch"] = "replace"
    return {"spec": {"template": template}}


def _revision(obj: Obj) -> int:
    value = obj.get("revision")
    return value if isinstance(value, int) else 0


def sync_history(ctx: Context, ds: Obj, running_hashes: set[str], now: float) -> None:
    """Make the current template the newest revision; prune what the limit lets go."""
    owned = [cr for cr in ctx.list("ControllerRevision")
             if namespace(cr) == namespace(ds) and controller_uid(cr) == uid(ds)]  # fmt: skip
    template = (ds.get("spec") or {}).get("template") or {}
    current_hash = naming.template_hash(template)
    newest = max((_revision(cr) for cr in owned), default=0)
    by_hash = {(meta(cr).get("labels") or {}).get(HASH_LABEL): cr for cr in owned}
    current = by_hash.get(current_hash)
    if current is None:
        current = _create(ctx, ds, current_hash, newest + 1, now)
        owned.append(current)
    elif _revision(current) < newest:
        current["revision"] = newest + 1  # an undo: the old template is the newest again
        ctx.store.update(current, now)
    _prune(ctx, ds, owned, current, running_hashes, now)


def _create(ctx: Context, ds: Obj, template_hash: str, number: int, now: float) -> Obj:
    template = (ds.get("spec") or {}).get("template") or {}
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    labels[HASH_LABEL] = template_hash
    cr_meta: Obj = {"name": f"{name(ds)}-{template_hash}", "namespace": namespace(ds),
                    "labels": labels, "ownerReferences": [owner_reference(ds)]}  # fmt: skip
    cause = (meta(ds).get("annotations") or {}).get(CHANGE_CAUSE)
    if cause:
        cr_meta["annotations"] = {CHANGE_CAUSE: cause}
    revision: Obj = {"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": cr_meta,
                     "data": revision_patch(ds), "revision": number}  # fmt: skip
    stale = ctx.store.get("ControllerRevision", namespace(ds), cr_meta["name"])
    if stale is not None:  # a leftover of an earlier DaemonSet of this name
        delete_quietly(ctx.store, stale, now)
    return ctx.store.create(ctx.admission.admit_create(revision, now), now)


def _prune(ctx: Context, ds: Obj, owned: list[Obj], current: Obj, running: set[str],
           now: float) -> None:  # fmt: skip
    limit = (ds.get("spec") or {}).get("revisionHistoryLimit", 10)
    old = [cr for cr in owned if cr is not current
           and (meta(cr).get("labels") or {}).get(HASH_LABEL) not in running]  # fmt: skip
    excess = len(old) - (limit if isinstance(limit, int) and limit >= 0 else 10)
    for cr in sorted(old, key=_revision)[: max(excess, 0)]:
        delete_quietly(ctx.store, cr, now)
