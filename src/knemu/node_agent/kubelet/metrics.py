"""``GET /metrics``: the agent's counters in the Prometheus text format (version 0.0.4).

Names follow the Prometheus naming guide (https://prometheus.io/docs/practices/naming/):
a ``knemu_`` prefix, ``_total`` for counters, base units, labels for the varying part
(drop reason, port name).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING

from knemu.node_agent.kubeproxy.relays import ProxyStatistics

if TYPE_CHECKING:  # typeshed only: any dataclass instance (port and DNS relay counters)
    from _typeshed import DataclassInstance


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Writer:
    """Samples grouped per metric family, as the text format requires."""

    def __init__(self) -> None:
        self.families: dict[str, list[str]] = {}

    def add(self, name: str, kind: str, value: float, labels: dict[str, str] | None = None) -> None:
        lines = self.families.setdefault(name, [f"# TYPE {name} {kind}"])
        label = ""
        if labels:
            label = "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"
        lines.append(f"{name}{label} {value:g}")

    @property
    def lines(self) -> list[str]:
        return [line for family in self.families.values() for line in family]


def render(
    node_name: str,
    router: Mapping[str, int],
    pods: int,
    ports: Mapping[str, DataclassInstance],
    faults: Mapping[str, int],
    flows: Mapping[str, int],
    dns: DataclassInstance | None,
    proxies: Mapping[str, ProxyStatistics],
    pod_events_dropped: int,
) -> str:
    """The exposition text of one node's counters, each argument one part's ``statistics()``
    (``proxies``: the NodePort and hostPort proxies by family name)."""
    w = _Writer()
    node = {"node": node_name}
    for key, value in sorted(router.items()):
        if key == "conntrack_entries":
            w.add("knemu_conntrack_entries", "gauge", value, node)
        elif key.startswith("drop_"):
            w.add("knemu_router_drops_total", "counter", value, {**node, "reason": key[5:]})
        else:
            w.add("knemu_router_packets_total", "counter", value, {**node, "action": key})
    w.add("knemu_pods", "gauge", pods, node)
    for name, stats in sorted(ports.items()):
        for field, value in asdict(stats).items():
            w.add(f"knemu_port_{field}_total", "counter", value, {**node, "port": name})
    for key, value in sorted(faults.items()):
        w.add("knemu_fault_datagrams_total", "counter", value, {**node, "result": key})
    for key, value in sorted(flows.items()):
        w.add(f"knemu_{key}", "gauge" if key == "flow_subscribers" else "counter", value, node)
    if dns is not None:
        for field, value in asdict(dns).items():
            w.add("knemu_dns_forwarder_total", "counter", value, {**node, "what": field})
    for family, proxy in proxies.items():
        for field in ("connections", "connect_failures", "datagrams", "bind_failures"):
            value = getattr(proxy, field)
            w.add(f"knemu_{family}_total", "counter", value, {**node, "what": field})
    w.add("knemu_pod_events_dropped_total", "counter", pod_events_dropped, node)
    return "\n".join(w.lines) + "\n"
