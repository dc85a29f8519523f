"""DaemonSet controller (pkg/controller/daemon: daemon_controller.go, update.go).

One pod per node that should run it.  ``node_placement`` is NodeShouldRunDaemonPod: the
template's nodeSelector and required node affinity must match the node's labels, and every
NoSchedule/NoExecute taint must be tolerated, the template's tolerations plus those every
daemon pod gets (util.AddOrUpdateDaemonPodTolerations: not-ready and unreachable NoExecute,
the pressure and unschedulable NoSchedule taints, network-unavailable for hostNetwork pods).
A node whose NoSchedule taint the pod does not tolerate gets no new pod but keeps one it has;
an untolerated NoExecute taint removes it.  ``plan`` decides, without writing, which nodes get
a pod and which pods go; the controller then writes that.

Pods are named ``<daemonset>-<5 chars>``, bound at creation (spec.nodeName; Kubernetes sets a
node affinity on metadata.name and lets the scheduler bind, to the same effect), and labelled
``controller-revision-hash`` (the template's hash, naming its ControllerRevision in
``daemonset_history``) and ``pod-template-generation``.  Updates follow
``spec.updateStrategy``: OnDelete replaces a pod only once it is deleted; RollingUpdate
deletes old pods whose node is short of an available pod at once, and available old pods
while fewer than ``maxUnavailable`` (default 1, of the desired count, rounded up) nodes lack
an available pod; the next sync puts a new pod there.  With ``maxSurge`` above 0 the new pod
starts next to the old one instead (on at most maxSurge nodes at once; at once where the old
pod is unavailable) and the old pod goes when the new one is available.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from knemu.apiserver.controllers.common import (
    Context,
    Obj,
    create_pod,
    delete_quietly,
    group_by_controller,
    is_active,
    is_pod_ready,
    meta,
    name,
    namespace,
    owner_reference,
    uid,
)
from knemu.apiserver.controllers.daemonset_history import HASH_LABEL, sync_history
from knemu.apiserver.controllers.deployment import scaled_value
from knemu.apiserver.controllers.replicaset import BURST_REPLICAS, is_available
from knemu.apiserver.controllers.scheduler import affinity_matches, node_order, tolerates
from knemu.apiserver.meta import naming
from knemu.apiserver.nodes import UNREACHABLE_TAINT, condition
from knemu.errors import KnemuError

GENERATION_LABEL = "pod-template-generation"
_NOT_READY = "node.kubernetes.io/not-ready"
_EVERY_DAEMON: list[tuple[str, str]] = [
    (_NOT_READY, "NoExecute"),
    (UNREACHABLE_TAINT, "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
]
_HOST_NETWORK_DAEMON = ("node.kubernetes.io/network-unavailable", "NoSchedule")


def daemon_tolerations(pod_spec: Obj) -> list[Obj]:
    """The template's tolerations plus those every daemon pod has (no tolerationSeconds)."""
    tolerations = [t for t in pod_spec.get("tolerations") or [] if isinstance(t, dict)]
    wanted = list(_EVERY_DAEMON)
    if pod_spec.get("hostNetwork") is True:
        wanted.append(_HOST_NETWORK_DAEMON)
    for key, effect in wanted:
        if not any(t.get("key") == key and t.get("effect") == effect for t in tolerations):
            tolerations.append({"key": key, "operator": "Exists", "effect": effect})
    return tolerations


def node_placement(pod_spec: Obj, node: Obj) -> tuple[bool, bool]:
    """(should run a new pod there, may keep the one it has): NodeShouldRunDaemonPod."""
    probe = {"spec": {**pod_spec, "tolerations": daemon_tolerations(pod_spec)}}
    node_labels = {str(k): str(v) for k, v in (meta(node).get("labels") or {}).items()}
    if not affinity_matches(probe, node_labels):
        return False, False
    run = keep = True
    for taint in (node.get("spec") or {}).get("taints") or []:
        effect = taint.get("effect")
        if effect in ("NoSchedule", "NoExecute") and not tolerates(probe, taint):
            run = False
            keep = keep and effect != "NoExecute"
    return run, keep


@dataclass
class Plan:
    """What one sync of a DaemonSet does: nodes that get a pod, pods deleted, the status."""

    create_on: list[str] = field(default_factory=list)
    delete: list[Obj] = field(default_factory=list)
    status: Obj = field(default_factory=dict)
    wait_until: float | None = None  # when a ready pod becomes available (minReadySeconds)


def _oldest_first(pods: list[Obj]) -> list[Obj]:
    return sorted(pods, key=lambda p: (str(meta(p).get("creationTimestamp") or ""), name(p)))


def _wait_for(out: Plan, pod: Obj, min_ready: int, now: float) -> None:
    """Note when a ready pod becomes available (minReadySeconds), for the next sync."""
    if is_pod_ready(pod) and not is_available(pod, min_ready, now):
        since = naming.parse_rfc3339((condition(pod, "Ready") or {}).get("lastTransitionTime"))
        if since is not None:
            due = since + min_ready
            out.wait_until = due if out.wait_until is None else min(out.wait_until, due)


def _rolling_update(spec: Obj) -> Obj | None:
    strategy = spec.get("updateStrategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return None
    return dict(strategy.get("rollingUpdate") or {})


def plan(ds: Obj, nodes: list[Obj], owned: list[Obj], now: float) -> Plan:
    spec = ds.get("spec") or {}
    template = spec.get("template") or {}
    pod_spec, current = template.get("spec") or {}, naming.template_hash(template)
    min_ready = int(spec.get("minReadySeconds") or 0)
    out = Plan()
    by_node: dict[str, list[Obj]] = {}
    for pod in owned:
        if (pod.get("status") or {}).get("phase") == "Failed" and not meta(pod).get(
            "deletionTimestamp"
        ):
            out.delete.append(pod)  # the next sync puts a fresh pod on its node
        elif is_active(pod):
            by_node.setdefault(str((pod.get("spec") or {}).get("nodeName") or ""), []).append(pod)
    placed = [(node, *node_placement(pod_spec, node))
              for node in sorted(nodes, key=lambda n: node_order(name(n)))]  # fmt: skip
    desired = sum(1 for _, run, _ in placed if run)
    rolling = _rolling_update(spec)
    surge = scaled_value(rolling.get("maxSurge", 0), desired, True) if rolling else 0
    counts = dict.fromkeys(("current", "misscheduled", "ready", "updated", "available"), 0)
    counts["desired"] = desired
    old: list[tuple[Obj, bool]] = []  # (pod of an old template, available): maxUnavailable
    surging = 0  # maxSurge: nodes whose new pod is not available yet
    candidates: list[str] = []  # ... and nodes that could get one next to their old pod
    for node, run, keep in placed:
        pods = _oldest_first(by_node.get(name(node), []))
        if not keep or not run:
            out.delete += pods if not keep else pods[1:]
            counts["misscheduled"] += bool(pods)
            continue
        if not pods:
            out.create_on.append(name(node))
            continue
        new = [p for p in pods if (meta(p).get("labels") or {}).get(HASH_LABEL) == current]
        olds = [p for p in pods if p not in new]
        kept = olds[:1] + new[:1] if surge else pods[:1]  # the old pod counts while it runs
        out.delete += [p for p in pods if p not in kept]  # one pod per node (two while surging)
        pod, available = kept[0], is_available(kept[0], min_ready, now)
        counts["current"] += 1
        counts["ready"] += is_pod_ready(pod)
        counts["available"] += available
        counts["updated"] += any(p in new for p in kept)
        for p in kept:
            _wait_for(out, p, min_ready, now)
        if not surge:
            if pod not in new:
                old.append((pod, available))
        elif new and olds:
            if is_available(new[0], min_ready, now):
                out.delete.append(olds[0])  # its replacement is up
            else:
                surging += 1
        elif olds:
            (out.create_on if not available else candidates).append(name(node))
    if rolling is not None and not surge:
        out.delete += _rolling(rolling, old, desired, counts["available"])
    out.create_on += candidates[: max(surge - surging, 0)]
    out.status = _status(ds, counts)
    return out


def _rolling(rolling: Obj, old: list[tuple[Obj, bool]], desired: int, available: int) -> list[Obj]:
    """The old pods a RollingUpdate without surge deletes in this sync (update.go)."""
    max_unavailable = scaled_value(rolling.get("maxUnavailable", 1), desired, True)
    max_unavailable = max(max_unavailable, 1)  # both 0 is refused at validation
    unavailable = desired - available
    doomed = [pod for pod, ok in old if not ok]
    for pod, ok in old:
        if ok and unavailable < max_unavailable:
            doomed.append(pod)
            unavailable += 1
    return doomed


def _status(ds: Obj, counts: dict[str, int]) -> Obj:
    """apps/v1 DaemonSetStatus; zero omitempty fields left out as the API server does."""
    status: Obj = {
        "currentNumberScheduled": counts["current"],
        "numberMisscheduled": counts["misscheduled"],
        "desiredNumberScheduled": counts["desired"],
        "numberReady": counts["ready"],
        "observedGeneration": meta(ds).get("generation", 1),
    }
    optional = {
        "updatedNumberScheduled": counts["updated"],
        "numberAvailable": counts["available"],
        "numberUnavailable": counts["desired"] - counts["available"],
    }
    status.update({k: v for k, v in optional.items() if v})
    return status


class DaemonSetController:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._deadline: float | None = None
        self._reported_failures: set[tuple[str, str]] = set()

    def next_deadline(self) -> float | None:
        return self._deadline

    def sync(self, now: float) -> None:
        self._deadline = None
        sets = [ds for ds in self._ctx.list("DaemonSet") if not meta(ds).get("deletionTimestamp")]
        for ds in sets:
            pods = group_by_controller(self._ctx.list("Pod")).get(uid(ds), [])
            running = {str((meta(p).get("labels") or {}).get(HASH_LABEL)) for p in pods}
            sync_history(self._ctx, ds, running, now)
            step = plan(ds, self._ctx.list("Node"), pods, now)
            wrote = self._apply(ds, step, now)
            if wrote:  # status from what is now stored
                pods = group_by_controller(self._ctx.list("Pod")).get(uid(ds), [])
                step = plan(ds, self._ctx.list("Node"), pods, now)
            if step.wait_until is not None:
                due = step.wait_until
                self._deadline = due if self._deadline is None else min(self._deadline, due)
            if ds.get("status") != step.status:
                ds["status"] = step.status
                self._ctx.store.update(ds, now)
            if self._ctx.over_budget():
                return

    def _apply(self, ds: Obj, step: Plan, now: float) -> bool:
        wrote = False
        for pod in step.delete:
            if delete_quietly(self._ctx.store, pod, now):
                self._event(ds, "Normal", "SuccessfulDelete", f"Deleted pod: {name(pod)}", now)
                wrote = True
        for node in step.create_on[:BURST_REPLICAS]:
            try:
                pod = self._create_pod(ds, node, now)
            except KnemuError as exc:
                key = (uid(ds), f"{meta(ds).get('generation')}/{type(exc).__name__}")
                if key not in self._reported_failures:
                    self._reported_failures.add(key)
                    self._event(
                        ds, "Warning", "FailedCreate", f"Error creating: {exc.message}", now
                    )
                break
            self._event(ds, "Normal", "SuccessfulCreate", f"Created pod: {name(pod)}", now)
            wrote = True
            if self._ctx.over_budget():
                break
        return wrote

    def _create_pod(self, ds: Obj, node: str, now: float) -> Obj:
        template = copy.deepcopy((ds.get("spec") or {}).get("template") or {})
        tmeta = template.get("metadata") or {}
        pod_labels = dict(tmeta.get("labels") or {})
        pod_labels[HASH_LABEL] = naming.template_hash((ds.get("spec") or {}).get("template"))
        pod_labels[GENERATION_LABEL] = str(meta(ds).get("generation", 1))
        pod_meta: Obj = {"namespace": namespace(ds), "labels": pod_labels,
                         "ownerReferences": [owner_reference(ds)]}  # fmt: skip
        if tmeta.get("annotations"):
            pod_meta["annotations"] = dict(tmeta["annotations"])
        spec = template.get("spec") or {}
        spec["tolerations"] = daemon_tolerations(spec)
        spec["nodeName"] = node
        pod: Obj = {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": spec}
        return create_pod(self._ctx, ds, pod, now)

    def _event(self, ds: Obj, etype: str, reason: str, message: str, now: float) -> None:
        self._ctx.recorder.record(ds, etype, reason, message, now, component="daemonset-controller")
