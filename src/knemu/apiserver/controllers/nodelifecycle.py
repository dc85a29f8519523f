"""Node lifecycle controller (pkg/controller/nodelifecycle) with taint-based eviction.

Follows "Node status" and "Taint based evictions" in the Kubernetes docs
(https://kubernetes.io/docs/concepts/architecture/nodes/#condition,
https://kubernetes.io/docs/concepts/scheduling-eviction/taint-and-toleration/#taint-based-evictions):

* A node whose lease was not renewed for ``node_grace_s`` (node-monitor-grace-period) gets
  condition Ready=Unknown (reason NodeStatusUnknown, "Kubelet stopped posting node status."),
  the taint ``node.kubernetes.io/unreachable`` NoSchedule, a NodeNotReady event, and its pods'
  Ready condition set to False (MarkPodsNotReady), so their endpoints stop being ready at once.
  "Not renewed for" is measured against the newest heartbeat the api-server has read
  (``NodeRegistry.observed_until``), not the wall clock: a backlog is not silence.
* The NoExecute taint, which starts eviction, is added at the zone's eviction rate and not at
  all while every zone is fully disrupted (``disruption.py``: Kubernetes' rules).
* A pod on such a node is deleted once it has been there for its toleration of the
  unreachable NoExecute taint (tolerationSeconds; admission gives every pod
  ``eviction_toleration_s``; no matching toleration: at once; no tolerationSeconds: never),
  with a TaintManagerEviction event; its ReplicaSet then replaces it on a live node.
* A renewal makes the node Ready again (NodeRegistry.renew).

Leases live in the registry's memory; ``next_deadline`` says when the next lease expires or
the next eviction is due, so the server can sleep until then.
"""

from __future__ import annotations

import logging

from knemu.apiserver.controllers.common import (
    Context,
    Obj,
    delete_quietly,
    is_active,
    labels_of,
    name,
    namespace,
)
from knemu.apiserver.controllers.disruption import Disruption, zone_key
from knemu.apiserver.controllers.scheduler import tolerates
from knemu.apiserver.meta import naming
from knemu.apiserver.nodes import UNREACHABLE_TAINT, condition, is_ready, set_condition
from knemu.errors import NotFound

log = logging.getLogger(__name__)
UNREACHABLE_NO_EXECUTE: Obj = {"key": UNREACHABLE_TAINT, "effect": "NoExecute"}


def toleration_s(pod: Obj) -> float | None:
    """How long ``pod`` tolerates an unreachable node: None = forever, 0 = not at all.

    The shortest tolerationSeconds of the matching tolerations; forever only when none of
    them sets one (taint eviction controller's getMinTolerationTime)."""
    matching = [
        tol
        for tol in (pod.get("spec") or {}).get("tolerations") or []
        if tolerates({"spec": {"tolerations": [tol]}}, UNREACHABLE_NO_EXECUTE)
    ]
    if not matching:
        return 0.0
    seconds = [
        float(t["tolerationSeconds"]) for t in matching if t.get("tolerationSeconds") is not None
    ]
    return max(0.0, min(seconds)) if seconds else None


class NodeLifecycleController:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        timings = ctx.config.timings
        self.disruption = Disruption(timings.node_eviction_qps, timings.secondary_eviction_qps)
        self._unready_since: dict[str, float] = {}  # node -> when it was tainted NoExecute

    def sync(self, now: float) -> None:
        grace = self._ctx.config.timings.node_grace_s
        nodes = self._ctx.list("Node")
        on_node: dict[str, list[Obj]] = {}
        for pod in self._ctx.list("Pod"):
            if is_active(pod):
                on_node.setdefault(str((pod.get("spec") or {}).get("nodeName")), []).append(pod)
        lost = []
        heard = self._ctx.registry.observed_until(now)  # see NodeRegistry.observed_until
        for node in nodes:
            node_name = name(node)
            if heard - self._ctx.registry.last_renew(node_name, now) < grace:
                self._unready_since.pop(node_name, None)
                continue
            if is_ready(node) or not self._tainted(node, "NoSchedule"):
                log.info(
                    "node %s: last heartbeat %.1f s before the others' median (now - %.1f s)",
                    node_name,
                    heard - self._ctx.registry.last_renew(node_name, now),
                    now - heard,
                )
                self._mark_unreachable(node, now)
            self._mark_pods_not_ready(node_name, on_node.get(node_name, []), now)
            lost.append(node)
        self.disruption.observe((zone_key(labels_of(n)), is_ready(n)) for n in nodes)
        if self.disruption.halted:
            for node in lost:
                self._stop_eviction(node, now)
        else:
            for node in lost:
                since = self._taint_no_execute(node, now)
                if since is not None:
                    self._evict(on_node.get(name(node), []), since, now)
        for gone in set(self._unready_since) - {name(n) for n in nodes}:
            del self._unready_since[gone]

    def next_deadline(self, now: float) -> float | None:
        """The earliest lease expiry, NoExecute taint or eviction still to come."""
        grace = self._ctx.config.timings.node_grace_s
        deadlines: list[float] = []
        waiting_zones = set()
        lag = now - self._ctx.registry.observed_until(now)  # expiries move back by this much
        for node in self._ctx.list("Node"):
            node_name = name(node)
            renewed = self._ctx.registry.last_renew(node_name, now)
            if now - lag - renewed < grace:
                deadlines.append(renewed + grace + lag)
            elif node_name not in self._unready_since:
                waiting_zones.add(zone_key(labels_of(node)))  # lost, not yet tainted
        for zone in waiting_zones:
            due = self.disruption.next_token(zone, now)
            if due is not None:
                deadlines.append(max(due, now))
        for pod in self._ctx.list("Pod"):
            since = self._unready_since.get(str((pod.get("spec") or {}).get("nodeName")))
            seconds = toleration_s(pod)
            if since is not None and seconds is not None and is_active(pod):
                deadlines.append(since + seconds)
        return min(deadlines) if deadlines else None

    @staticmethod
    def _tainted(node: Obj, effect: str) -> bool:
        taints = (node.get("spec") or {}).get("taints") or []
        return any(t.get("key") == UNREACHABLE_TAINT and t.get("effect") == effect for t in taints)

    def _set_taints(self, node: Obj, effects: tuple[str, ...], now: float) -> bool:
        """Give ``node`` exactly the unreachable taints of ``effects`` (keeping their
        timeAdded); False when the node is gone."""
        spec = node.setdefault("spec", {})
        taints = spec.get("taints") or []
        kept = {t.get("effect"): t for t in taints if t.get("key") == UNREACHABLE_TAINT}
        spec["taints"] = [t for t in taints if t.get("key") != UNREACHABLE_TAINT] + [
            kept.get(e) or {"key": UNREACHABLE_TAINT, "effect": e, "timeAdded": naming.rfc3339(now)}
            for e in effects
        ]
        try:
            stored = self._ctx.store.update(node, now)
        except NotFound:
            return False
        node["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"]
        return True

    def _mark_unreachable(self, node: Obj, now: float) -> None:
        """Ready=Unknown and NoSchedule; the NoExecute taint (eviction) is rate limited."""
        set_condition(
            node,
            "Ready",
            "Unknown",
            "NodeStatusUnknown",
            "Kubelet stopped posting node status.",
            now,
        )
        effects = (
            ("NoSchedule", "NoExecute") if self._tainted(node, "NoExecute") else ("NoSchedule",)
        )
        if not self._set_taints(node, effects, now):
            return
        message = f"Node {name(node)} status is now: NodeNotReady"
        self._ctx.recorder.record(
            node, "Normal", "NodeNotReady", message, now, component="node-controller"
        )

    def _taint_no_execute(self, node: Obj, now: float) -> float | None:
        """When ``node``'s pods' eviction clock started: its NoExecute taint, added now if
        its zone's eviction rate allows; None while it waits for its turn."""
        node_name = name(node)
        if node_name in self._unready_since:
            return self._unready_since[node_name]
        if self._tainted(node, "NoExecute"):  # tainted before this process started
            taint = next(
                t
                for t in node["spec"]["taints"]
                if t.get("key") == UNREACHABLE_TAINT and t.get("effect") == "NoExecute"
            )
            since = naming.parse_rfc3339(taint.get("timeAdded")) or now
        elif self.disruption.may_evict(zone_key(labels_of(node)), now):
            if not self._set_taints(node, ("NoSchedule", "NoExecute"), now):
                return None
            since = now
        else:
            return None
        self._unready_since[node_name] = since
        return since

    def _stop_eviction(self, node: Obj, now: float) -> None:
        """Every zone is fully disrupted: no evictions, NoExecute taints off again
        (markNodeAsReachable), so the pods stay where they are."""
        self._unready_since.pop(name(node), None)
        if self._tainted(node, "NoExecute"):
            self._set_taints(node, ("NoSchedule",), now)

    def _mark_pods_not_ready(self, node_name: str, pods: list[Obj], now: float) -> None:
        for pod in pods:
            cond = condition(pod, "Ready")
            if cond is not None and cond.get("status") == "False":
                continue
            set_condition(
                pod, "Ready", "False", "NodeNotReady", f"node {node_name} is not ready", now
            )
            try:
                self._ctx.store.update(pod, now)
            except NotFound:
                continue
            self._ctx.recorder.record(
                pod,
                "Warning",
                "NodeNotReady",
                "Node is not ready",
                now,
                component="node-controller",
            )

    def _evict(self, pods: list[Obj], since: float, now: float) -> None:
        for pod in pods:
            seconds = toleration_s(pod)
            if seconds is None or now < since + seconds:
                continue
            if delete_quietly(self._ctx.store, pod, now):
                message = f"Marking for deletion Pod {namespace(pod)}/{name(pod)}"
                self._ctx.recorder.record(
                    pod,
                    "Normal",
                    "TaintManagerEviction",
                    message,
                    now,
                    component="taint-eviction-controller",
                )
