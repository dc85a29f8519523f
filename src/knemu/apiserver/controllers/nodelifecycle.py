"""Node lifecycle controller (pkg/controller/nodelifecycle) with taint-based eviction.

Follows "Node status" and "Taint based evictions" in the Kubernetes docs
(https://kubernetes.io/docs/concepts/architecture/nodes/#condition,
https://kubernetes.io/docs/concepts/scheduling-eviction/taint-and-toleration/#taint-based-evictions):

* A node whose lease was not renewed for ``node_grace_s`` (node-monitor-grace-period) gets
  condition Ready=Unknown (reason NodeStatusUnknown, "Kubelet stopped posting node status."),
  the taints ``node.kubernetes.io/unreachable`` NoSchedule and NoExecute, a NodeNotReady event,
  and its pods' Ready condition set to False (MarkPodsNotReady), so their endpoints stop being
  ready at once.
* A pod on such a node is deleted once it has been there for its toleration of the
  unreachable NoExecute taint (tolerationSeconds; admission gives every pod
  ``eviction_toleration_s``; no matching toleration: at once; no tolerationSeconds: never),
  with a TaintManagerEviction event; its ReplicaSet then replaces it on a live node.
* A renewal makes the node Ready again (NodeRegistry.renew).

Leases live in the registry's memory; ``next_deadline`` says when the next lease expires or
the next eviction is due, so the server can sleep until then.
"""

from __future__ import annotations

from knemu.apiserver.controllers.common import (
    Context,
    Obj,
    delete_quietly,
    is_active,
    name,
    namespace,
)
from knemu.apiserver.controllers.scheduler import tolerates
from knemu.apiserver.meta import naming
from knemu.apiserver.nodes import UNREACHABLE_TAINT, condition, is_ready, set_condition
from knemu.errors import NotFound

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
        self._unready_since: dict[str, float] = {}

    def sync(self, now: float) -> None:
        grace = self._ctx.config.timings.node_grace_s
        nodes = self._ctx.list("Node")
        pods = [p for p in self._ctx.list("Pod") if is_active(p)]
        for node in nodes:
            node_name = name(node)
            on_node = [p for p in pods if (p.get("spec") or {}).get("nodeName") == node_name]
            if now - self._ctx.registry.last_renew(node_name, now) < grace:
                self._unready_since.pop(node_name, None)
                continue
            if is_ready(node) or not self._tainted(node):
                self._mark_unreachable(node, now)
            since = self._unready_since.setdefault(node_name, now)
            self._mark_pods_not_ready(node_name, on_node, now)
            self._evict(on_node, since, now)
        for gone in set(self._unready_since) - {name(n) for n in nodes}:
            del self._unready_since[gone]

    def next_deadline(self, now: float) -> float | None:
        """The earliest lease expiry or eviction still to come."""
        grace = self._ctx.config.timings.node_grace_s
        deadlines = []
        for node in self._ctx.list("Node"):
            node_name = name(node)
            if node_name in self._unready_since:
                continue
            deadlines.append(self._ctx.registry.last_renew(node_name, now) + grace)
        for pod in self._ctx.list("Pod"):
            since = self._unready_since.get(str((pod.get("spec") or {}).get("nodeName")))
            seconds = toleration_s(pod)
            if since is not None and seconds is not None and is_active(pod):
                deadlines.append(since + seconds)
        return min(deadlines) if deadlines else None

    @staticmethod
    def _tainted(node: Obj) -> bool:
        taints = (node.get("spec") or {}).get("taints") or []
        return any(t.get("key") == UNREACHABLE_TAINT for t in taints)

    def _mark_unreachable(self, node: Obj, now: float) -> None:
        set_condition(
            node,
            "Ready",
            "Unknown",
            "NodeStatusUnknown",
            "Kubelet stopped posting node status.",
            now,
        )
        spec = node.setdefault("spec", {})
        taints = [t for t in spec.get("taints") or [] if t.get("key") != UNREACHABLE_TAINT]
        stamp = naming.rfc3339(now)
        for effect in ("NoSchedule", "NoExecute"):
            taints.append({"key": UNREACHABLE_TAINT, "effect": effect, "timeAdded": stamp})
        spec["taints"] = taints
        try:
            self._ctx.store.update(node, now)
        except NotFound:
            return
        message = f"Node {name(node)} status is now: NodeNotReady"
        self._ctx.recorder.record(
            node, "Normal", "NodeNotReady", message, now, component="node-controller"
        )

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
