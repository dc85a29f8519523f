"""The resource metrics API (``metrics.k8s.io/v1beta1``), as metrics-server serves it.

``kubectl top nodes|pods`` reads NodeMetrics and PodMetrics
(https://kubernetes.io/docs/tasks/debug/debug-cluster/resource-metrics-pipeline/).  Their
figures come from each node agent's ``/stats/summary`` (the kubelet Summary API, real CPU and
memory of the processes, ``node_agent/runtime/podstats.py``); this module turns summaries into the
API objects (CPU in nanocores ``n``, memory in ``Ki``, as metrics-server writes them).  Pure:
summaries, the Pod and Node objects and a label selector in, objects out; ``rest/metrics.py``
fetches the summaries.
"""

from __future__ import annotations

from typing import Any

from knemu.apiserver.meta import labels

Obj = dict[str, Any]
GROUP_VERSION = "metrics.k8s.io/v1beta1"


def _usage(figures: Obj) -> Obj:
    cpu = int((figures.get("cpu") or {}).get("usageNanoCores") or 0)
    memory = int((figures.get("memory") or {}).get("workingSetBytes") or 0)
    return {"cpu": f"{cpu}n", "memory": f"{memory // 1024}Ki"}


def _window(figures: Obj) -> str:
    return f"{float((figures.get('cpu') or {}).get('windowSeconds') or 0):.3f}s"


def _stamp(figures: Obj) -> str:
    return str((figures.get("cpu") or {}).get("time") or "")


def node_metrics(summary: Obj, node: Obj) -> Obj:
    figures = summary.get("node") or {}
    meta = node.get("metadata") or {}
    return {
        "kind": "NodeMetrics",
        "apiVersion": GROUP_VERSION,
        "metadata": {"name": meta.get("name", ""), "labels": meta.get("labels") or {},
                     "creationTimestamp": _stamp(figures)},
        "timestamp": _stamp(figures),
        "window": _window(figures),
        "usage": _usage(figures),
    }  # fmt: skip


def pod_metrics(summaries: list[Obj], pods: list[Obj], selector: str = "") -> list[Obj]:
    """PodMetrics of ``pods`` (the Pod objects, for labels) found in the summaries, in the
    order of ``pods``; pods no node reported (not started, node down) are left out, as
    metrics-server leaves them out."""
    wanted = labels.parse_selector(selector)
    by_key = {
        (p["podRef"]["namespace"], p["podRef"]["name"]): p
        for s in summaries
        for p in s.get("pods") or []
        if isinstance(p, dict) and isinstance(p.get("podRef"), dict)
    }
    out = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        stats = by_key.get((meta.get("namespace", ""), meta.get("name", "")))
        if stats is None or not labels.matches(wanted, meta.get("labels") or {}):
            continue
        containers = stats.get("containers") or []
        first = containers[0] if containers else {}
        out.append({
            "kind": "PodMetrics",
            "apiVersion": GROUP_VERSION,
            "metadata": {"name": meta.get("name", ""), "namespace": meta.get("namespace", ""),
                         "labels": meta.get("labels") or {},
                         "creationTimestamp": _stamp(first)},
            "timestamp": _stamp(first),
            "window": _window(first),
            "containers": [{"name": c.get("name", ""), "usage": _usage(c)} for c in containers],
        })  # fmt: skip
    return out


def metrics_list(kind: str, items: list[Obj]) -> Obj:
    return {"kind": f"{kind}List", "apiVersion": GROUP_VERSION, "metadata": {}, "items": items}
