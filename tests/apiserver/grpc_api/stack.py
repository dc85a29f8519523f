"""Helpers: an in-process api-server core (Store + WatchHub + gRPC service) on loopback."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from knemu.apiserver.grpc_api.service import bound_port, start_grpc_server
from knemu.apiserver.nodes import NodeRegistry
from knemu.apiserver.recorder import EventRecorder
from knemu.apiserver.storage.store import Store
from knemu.apiserver.storage.watch_hub import WatchHub
from knemu.config import ApiServerConfig
from knemu.proto.client import ClusterClient

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def pod(name: str, namespace: str = "default", node: str = "", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx"}]},
    }


def service(name: str, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"clusterIP": "10.96.0.50", "ports": [{"port": 80, "targetPort": 8080}]},
    }


@dataclass
class Stack:
    store: Store
    hub: WatchHub
    registry: NodeRegistry
    server: grpc.aio.Server
    target: str
    client: ClusterClient
    path: str

    async def restart(self) -> None:
        """Stop the gRPC server and serve the same store again on the same port."""
        await self.server.stop(None)
        self.server = await start_grpc_server(self.target, self.store, self.hub, self.registry)


async def make_stack(tmp_path: Path, queue_events: int = 1000, history: int = 1000) -> Stack:
    path = str(tmp_path / f"kt{secrets.token_hex(3)}.db")
    store = Store(path, event_history=history)
    hub = WatchHub(store, queue_events)
    registry = NodeRegistry(store, ApiServerConfig(data_dir=str(tmp_path)), EventRecorder(store))
    server = await start_grpc_server("127.0.0.1:0", store, hub, registry)
    target = f"127.0.0.1:{bound_port(server)}"
    return Stack(store, hub, registry, server, target, ClusterClient(target), path)


async def close_stack(stack: Stack) -> None:
    await stack.client.close()
    await stack.server.stop(None)
    stack.hub.close()
    stack.store.close()
