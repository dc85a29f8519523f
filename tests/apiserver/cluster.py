"""The api-server logic without I/O: a real in-memory Store, admission, node registry and
controllers driven by an injected clock (``Cluster``), and the seeds' manifests."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from knemu.apiserver.admission.pipeline import Admission
from knemu.apiserver.controllers import ControllerManager
from knemu.apiserver.nodes import NodeRegistry
from knemu.apiserver.recorder import EventRecorder
from knemu.apiserver.storage.store import Store
from knemu.config import ApiServerConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
T0 = 1_700_000_000.0


def load_yaml(name: str) -> list[dict[str, Any]]:
    # The seed files carry trailing tabs after values, which YAML forbids; strip them.
    text = re.sub(r"[ \t]+$", "", (EXAMPLES / name).read_text(), flags=re.M)
    return [d for d in yaml.safe_load_all(text) if d]


@dataclass
class Cluster:
    store: Store
    config: ApiServerConfig
    recorder: EventRecorder
    admission: Admission
    registry: NodeRegistry
    manager: ControllerManager
    now: float = T0

    def tick(self, seconds: float = 0.0) -> None:
        """Advance the clock and let the controllers settle."""
        self.now += seconds
        self.manager.sync(self.now)

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        return self.store.create(self.admission.admit_create(obj, self.now), self.now)

    def add_node(self, index: int, labels: dict[str, str] | None = None) -> dict[str, Any]:
        """Register node-N and renew its lease once, as an agent does once it is up."""
        node = self.registry.register(
            "",
            f"host-{index}",
            f"192.168.59.{10 + index}",
            f"02:00:00:00:00:{index:02x}",
            4789,
            10250,
            labels or {},
            self.now,
        )
        name = node["metadata"]["name"]
        self.registry.renew(name, self.now)
        renewed: dict[str, Any] = self.store.get("Node", "", name)  # type: ignore[assignment]
        return renewed

    def renew_all(self) -> None:
        for node in self.store.list("Node"):
            self.registry.renew(node["metadata"]["name"], self.now)

    def pods(self, namespace: str = "default") -> list[dict[str, Any]]:
        return self.store.list("Pod", namespace)

    def run_pods(self, ip_base: str = "10.244") -> None:
        """Play every kubelet: report each bound pod Running and Ready with an IP."""
        for pod in self.store.list("Pod"):
            node = pod["spec"].get("nodeName")
            if not node or pod.get("status", {}).get("podIP"):
                continue
            index = int(node.rsplit("-", 1)[1])
            host = 2 + sum(
                1
                for p in self.store.list("Pod")
                if p["spec"].get("nodeName") == node and p.get("status", {}).get("podIP")
            )
            self.report(pod, f"{ip_base}.{index}.{host}", ready=True)

    def report(self, pod: dict[str, Any], ip: str, ready: bool = True) -> bool:
        containers = pod["spec"]["containers"]
        report = {
            "namespace": pod["metadata"]["namespace"],
            "name": pod["metadata"]["name"],
            "uid": pod["metadata"]["uid"],
            "node_name": pod["spec"].get("nodeName", ""),
            "phase": "Running",
            "pod_ip": ip,
            "ready": ready,
            "container_statuses": [
                {"name": c["name"], "ready": ready, "state": "running", "image": c["image"]}
                for c in containers
            ],
        }
        return self.registry.report_pod_status(report, self.now)

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        out = []
        for ns in ("default", "kube-system"):
            out += [e for e in self.store.list("Event", ns) if reason in (None, e["reason"])]
        return out
