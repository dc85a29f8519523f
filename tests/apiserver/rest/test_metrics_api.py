"""metrics.k8s.io objects from node summaries."""

from __future__ import annotations

import pytest

from knemu.apiserver.rest import metrics_api
from knemu.errors import KnemuError

STAMP = "2023-11-14T22:13:20Z"


def _figures(nano: int, mem: int) -> dict[str, object]:
    return {"cpu": {"time": STAMP, "usageNanoCores": nano, "windowSeconds": 0.5},
            "memory": {"time": STAMP, "workingSetBytes": mem}}  # fmt: skip


SUMMARY = {
    "node": {"nodeName": "node-1", **_figures(250_000_000, 64 * 1024 * 1024)},
    "pods": [{"podRef": {"name": "web", "namespace": "default", "uid": "u"},
              "containers": [{"name": "c", **_figures(5_000_000, 2048 * 1024)}]}],
}  # fmt: skip
POD = {"metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}}}
NODE = {"metadata": {"name": "node-1", "labels": {"kubernetes.io/hostname": "node-1"}}}


def test_node_metrics() -> None:
    out = metrics_api.node_metrics(SUMMARY, NODE)
    assert out["kind"] == "NodeMetrics" and out["metadata"]["name"] == "node-1"
    assert out["usage"] == {"cpu": "250000000n", "memory": "65536Ki"}
    assert out["window"] == "0.500s" and out["timestamp"] == STAMP


def test_pod_metrics_by_selector_and_only_reported_pods() -> None:
    other = {"metadata": {"name": "gone", "namespace": "default", "labels": {"app": "web"}}}
    (out,) = metrics_api.pod_metrics([SUMMARY], [POD, other], "app=web")
    assert out["containers"] == [{"name": "c", "usage": {"cpu": "5000000n", "memory": "2048Ki"}}]
    assert metrics_api.pod_metrics([SUMMARY], [POD], "app=db") == []
    with pytest.raises(KnemuError):
        metrics_api.pod_metrics([SUMMARY], [POD], "app in (")
    listed = metrics_api.metrics_list("PodMetrics", [out])
    assert listed["kind"] == "PodMetricsList" and listed["items"] == [out]
