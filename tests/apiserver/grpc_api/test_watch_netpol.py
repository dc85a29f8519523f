"""The kinds NetworkPolicy enforcement watches: Namespaces (their labels) and typed
NetworkPolicies, through the real Watch stream and an Informer cache."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from knemu.proto import knemu_pb2 as pb
from knemu.proto.client import Informer
from knemu.testing import wait_for

from .stack import NOW, Stack

POLICY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "allow-team", "namespace": "default"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "web"}},
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}, "podSelector": {}}],
                "ports": [{"port": "http"}],
            }
        ],
    },
}


async def test_a_watch_of_namespaces_and_policies_delivers_typed_objects(stack: Stack) -> None:
    stack.store.create({"kind": "Namespace", "metadata": {"name": "prod", "labels":
                        {"team": "a"}}}, NOW)  # fmt: skip
    stack.store.create(POLICY, NOW)
    stream = stack.client.watch(["Namespace", "NetworkPolicy"], 0, "test")
    async with contextlib.aclosing(stream):
        events = [await anext(stream) for _ in range(3)]
    assert [e.type for e in events] == [pb.WatchEvent.ADDED] * 2 + [pb.WatchEvent.SYNCED]
    ns, np = events[0].object.namespace, events[1].object.network_policy
    assert ns.metadata.name == "prod" and dict(ns.metadata.labels) == {"team": "a"}
    peer = np.ingress[0].from_peers[0]
    assert dict(peer.namespace_selector.match_labels) == {"team": "a"}
    assert peer.HasField("pod_selector") and not peer.HasField("ip_block")
    assert np.ingress[0].ports[0].port == "http" and list(np.policy_types) == ["Ingress"]


async def test_an_informer_keeps_namespace_labels_current(stack: Stack) -> None:
    seen: list[tuple[str, str, dict[str, str]]] = []

    def on_event(etype: str, kind: str, obj: Any, old: Any | None) -> None:
        seen.append((etype, kind, dict(obj.metadata.labels)))

    informer = Informer(stack.client, ["Namespace", "NetworkPolicy"], "test", on_event)
    task = asyncio.create_task(informer.run())
    try:
        await informer.wait_synced()
        ns = stack.store.create({"kind": "Namespace", "metadata": {"name": "dev"}}, NOW)
        ns["metadata"]["labels"] = {"team": "b"}
        stack.store.update(ns, NOW)
        await wait_for(lambda: len(seen) == 2, 5.0, what="two namespace events")
        assert seen == [("ADDED", "Namespace", {}), ("MODIFIED", "Namespace", {"team": "b"})]
        cached = informer.get("Namespace", "", "dev")
        assert cached is not None and dict(cached.metadata.labels) == {"team": "b"}
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
