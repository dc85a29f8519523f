"""Scheduler: binds pending pods to nodes (kube-scheduler's filter and score, much reduced).

Filters, in the order kube-scheduler reports them
(https://kubernetes.io/docs/concepts/scheduling-eviction/kube-scheduler/):
NodeUnschedulable (spec.unschedulable), NodeAffinity (nodeSelector and required node affinity
terms), TaintToleration (NoSchedule/NoExecute taints the pod does not tolerate), node
readiness and NodePorts (a hostPort that an active pod on the node already holds, for the same
protocol and an overlapping hostIP, 0.0.0.0 overlapping every address).  Score: the node
running the fewest pods wins (spreading, like NodeResourcesBalancedAllocation on identical
nodes), ties broken by node number.
A pod with spec.nodeName set was placed by its author and is never touched.

A pod that fits nowhere stays Pending with condition PodScheduled=False, reason
Unschedulable, and a FailedScheduling event worded like kube-scheduler's
("0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, ...").
The event is recorded when that message changes, not on every retry.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from knemu.apiserver.controllers.common import Context, Obj, is_active, meta, name, namespace
from knemu.apiserver.meta import labels
from knemu.apiserver.nodes import condition, is_ready, set_condition
from knemu.errors import LocalError, NotFound

_NUMBER = re.compile(r"(\d+)")
ALL_ADDRESSES = "0.0.0.0"
NO_FREE_PORTS = "node(s) didn't have free ports for the requested pod ports"  # nodeports.ErrReason

HostPort = tuple[str, str, int]  # (protocol, hostIP, hostPort)


def node_order(node_name: str) -> tuple[Any, ...]:
    """Natural order: node-2 before node-10."""
    return tuple(int(p) if p.isdigit() else p for p in _NUMBER.split(node_name))


def tolerates(pod: Obj, taint: Obj) -> bool:
    for tol in (pod.get("spec") or {}).get("tolerations") or []:
        if tol.get("effect") not in (None, "", taint.get("effect")):
            continue
        if tol.get("operator") == "Exists" and tol.get("key") in (None, "", taint.get("key")):
            return True
        if tol.get("key") == taint.get("key") and tol.get("value", "") == taint.get("value", ""):
            return True
    return False


def affinity_matches(pod: Obj, node_labels: dict[str, str]) -> bool:
    """nodeSelector and requiredDuringSchedulingIgnoredDuringExecution (terms are ORed)."""
    spec = pod.get("spec") or {}
    selector = spec.get("nodeSelector") or {}
    if any(node_labels.get(k) != v for k, v in selector.items()):
        return False
    affinity = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = affinity.get("nodeSelectorTerms") or []
    if not terms:
        return True
    for term in terms:
        try:
            sel = labels.from_label_selector(
                {"matchExpressions": term.get("matchExpressions") or []}
            )
        except LocalError:
            continue
        if sel.matches(node_labels):
            return True
    return False


def host_ports(pod: Obj) -> list[HostPort]:
    """The pod's hostPorts with the API defaults (protocol TCP, hostIP 0.0.0.0), as the
    NodePorts plugin reads them (framework.HostPortInfo sanitizes the same way)."""
    found: dict[HostPort, None] = {}
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in (container or {}).get("ports") or []:
            number = (port or {}).get("hostPort")
            if isinstance(number, int) and number > 0:
                found[(port.get("protocol") or "TCP", port.get("hostIP") or ALL_ADDRESSES,
                       number)] = None  # fmt: skip
    return list(found)


def ports_clash(a: HostPort, b: HostPort) -> bool:
    """framework.HostPortInfo.CheckConflict: same protocol and port, overlapping addresses."""
    if (a[0], a[2]) != (b[0], b[2]):
        return False
    return ALL_ADDRESSES in (a[1], b[1]) or a[1] == b[1]


def ports_fit(wanted: Iterable[HostPort], used: Iterable[HostPort]) -> bool:
    held = list(used)
    return not any(ports_clash(w, u) for w in wanted for u in held)


def filter_reason(pod: Obj, node: Obj, used_ports: Iterable[HostPort] = ()) -> str | None:
    """Why ``pod`` cannot go to ``node`` (kube-scheduler's wording), or None if it fits.
    ``used_ports``: the host ports the active pods on ``node`` hold."""
    if (node.get("spec") or {}).get("unschedulable"):
        return "node(s) were unschedulable"
    node_labels = {str(k): str(v) for k, v in (meta(node).get("labels") or {}).items()}
    if not affinity_matches(pod, node_labels):
        return "node(s) didn't match Pod's node affinity/selector"
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(pod, taint):
            return f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value', '')}}}"
    if not is_ready(node):
        return "node(s) were not ready"
    if not ports_fit(host_ports(pod), used_ports):
        return NO_FREE_PORTS
    return None


def unschedulable_message(total: int, reasons: Counter[str]) -> str:
    if total == 0:
        return "0/0 nodes are available: no nodes available to schedule pods."
    # sorted as whole strings, count first, as framework.FitError.Error() does
    parts = ", ".join(sorted(f"{count} {reason}" for reason, count in reasons.items()))
    return (
        f"0/{total} nodes are available: {parts}. preemption: 0/{total} nodes are available: "
        f"{total} Preemption is not helpful for scheduling."
    )


class Scheduler:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def sync(self, now: float) -> None:
        pods = self._ctx.list("Pod")
        pending = [p for p in pods if not (p.get("spec") or {}).get("nodeName") and is_active(p)]
        if not pending:
            return
        nodes = sorted(self._ctx.list("Node"), key=lambda n: node_order(name(n)))
        load = Counter(str((p.get("spec") or {}).get("nodeName")) for p in pods if is_active(p))
        used: dict[str, list[HostPort]] = {}
        for p in pods:
            bound = (p.get("spec") or {}).get("nodeName")
            if bound and is_active(p):
                used.setdefault(str(bound), []).extend(host_ports(p))
        for pod in sorted(pending, key=lambda p: str(meta(p).get("creationTimestamp", ""))):
            if (pod.get("spec") or {}).get(
                "schedulerName", "default-scheduler"
            ) != "default-scheduler":
                continue  # another scheduler's pod
            self._schedule(pod, nodes, load, used, now)
            if self._ctx.over_budget():
                return  # the step's time is spent: the next sync binds the rest

    def _schedule(
        self,
        pod: Obj,
        nodes: list[Obj],
        load: Counter[str],
        used: dict[str, list[HostPort]],
        now: float,
    ) -> None:
        reasons: Counter[str] = Counter()
        fits = []
        for node in nodes:
            reason = filter_reason(pod, node, used.get(name(node), ()))
            if reason is None:
                fits.append(node)
            else:
                reasons[reason] += 1
        if not fits:
            self._unschedulable(pod, unschedulable_message(len(nodes), reasons), now)
            return
        best = min(fits, key=lambda n: (load[name(n)], node_order(name(n))))
        load[name(best)] += 1
        used.setdefault(name(best), []).extend(host_ports(pod))  # the next pod sees them
        self._bind(pod, name(best), now)

    def _bind(self, pod: Obj, node_name: str, now: float) -> None:
        pod["spec"]["nodeName"] = node_name
        set_condition(pod, "PodScheduled", "True", "", "", now)
        try:
            self._ctx.store.update(pod, now)
        except NotFound:
            return
        message = f"Successfully assigned {namespace(pod)}/{name(pod)} to {node_name}"
        self._ctx.recorder.record(
            pod, "Normal", "Scheduled", message, now, component="default-scheduler"
        )

    def _unschedulable(self, pod: Obj, message: str, now: float) -> None:
        cond = condition(pod, "PodScheduled") or {}
        if cond.get("status") == "False" and cond.get("message") == message:
            return  # already reported; kube-scheduler retries quietly with backoff
        set_condition(pod, "PodScheduled", "False", "Unschedulable", message, now)
        try:
            self._ctx.store.update(pod, now)
        except NotFound:
            return
        self._ctx.recorder.record(
            pod, "Warning", "FailedScheduling", message, now, component="default-scheduler"
        )
