"""A KubeletApi over fakes: each test passes only the parts it exercises."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from knemu.node_agent.cni.conflist import CniConfig
from knemu.node_agent.dataplane.faults import Impairments
from knemu.node_agent.dataplane.flows import FlowLog
from knemu.node_agent.kubelet.api import KubeletApi


def make_kubelet_api(
    pods: Any = None,
    *,
    flows: FlowLog | None = None,
    faults: Impairments | None = None,
    table: Callable[[], dict[str, Any]] = dict,
    metrics: Callable[[], str] = str,
    cni: Callable[[], CniConfig | None] = lambda: None,
    inject: Callable[[str, bytes, float], None] = lambda key, packet, now: None,
) -> KubeletApi:
    """Node ``node-1``; ``pods`` has ``handles`` and ``runtime`` (empty when not given)."""
    return KubeletApi(
        "node-1",
        pods if pods is not None else SimpleNamespace(handles={}, runtime=None),
        flows if flows is not None else FlowLog(),
        faults if faults is not None else Impairments(seed=1),
        table=table,
        metrics=metrics,
        cni=cni,
        inject=inject,
    )
