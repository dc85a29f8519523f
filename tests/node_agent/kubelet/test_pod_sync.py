"""PodSync (the agent's kubelet loop) against fakes: convergence, retries and reports."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from knemu.node_agent.kubelet.pod_sync import PodSync, should_start, wants_pod
from knemu.node_agent.runtime.config_sources import TOKEN_KEY, TOKEN_KIND
from knemu.node_agent.runtime.pods import PodStatus
from knemu.proto import knemu_pb2 as pb
from knemu.testing import wait_for

from .kubelet_helpers import fake_pod_sync, pod


@pytest.fixture
async def sync(tmp_path: Path) -> AsyncIterator[PodSync]:
    async with fake_pod_sync(tmp_path) as s:
        yield s


def idle(s: PodSync) -> bool:
    return not s._workers


async def test_first_sync_adopts_then_changes_converge(sync: PodSync) -> None:
    informer, runtime = sync.cache, sync.runtime
    informer.put(pod("a"))
    informer.put(pod("elsewhere", node="node-2"))
    informer.put(pod("done", phase="Succeeded"))
    sync.kick("default/a")  # before the first sync: ignored, the sync adopts
    await sync.on_synced()
    assert runtime.started == ["default/a@uid-a"]
    assert set(sync.ports) == {"default/a"} and sync.network.pods == {"10.244.1.2": "default/a"}
    informer.put(pod("b"))
    sync.kick("default/b")
    await wait_for(lambda: "default/b" in sync.handles and idle(sync), 5, what="pod b started")
    del informer.pods[("default", "a")]
    sync.kick("default/a")
    await wait_for(lambda: runtime.stopped == ["default/a"] and idle(sync), 5, what="pod a stopped")
    assert "default/a" not in sync.ports and "10.244.1.2" not in sync.network.pods


async def test_a_new_uid_replaces_the_pod_and_finished_pods_are_kept(sync: PodSync) -> None:
    informer, runtime = sync.cache, sync.runtime
    informer.put(pod("a", uid="one"))
    await sync.on_synced()
    informer.put(pod("a", uid="two"))
    sync.kick("default/a")
    await wait_for(lambda: runtime.started[-1] == "default/a@two" and idle(sync), 5, what="restart")
    assert runtime.stopped == ["default/a"]
    informer.put(pod("a", uid="two", phase="Succeeded"))
    sync.kick("default/a")
    await wait_for(lambda: idle(sync), 5, what="converged")
    assert "default/a" in sync.handles  # kept for its logs, not restarted
    assert runtime.started == ["default/a@one", "default/a@two"]


async def test_failed_start_is_retried_with_backoff(sync: PodSync) -> None:
    informer, runtime = sync.cache, sync.runtime
    await sync.on_synced()
    runtime.failures["default/full"] = 1
    informer.put(pod("full"))
    sync.kick("default/full")
    await wait_for(lambda: "default/full" in sync.handles, 5, what="the retry to start the pod")
    assert runtime.started == ["default/full@uid-full"]


async def test_reports_survive_an_outage_and_rejected_ones_are_dropped(sync: PodSync) -> None:
    client = sync.client
    client.down = 2
    sync._on_status(PodStatus("default", "rejected", "u0", "node-1", "Running"))
    sync._on_status(PodStatus("default", "a", "u1", "node-1", "Pending"))
    sync._on_status(PodStatus("default", "a", "u1", "node-1", "Running", "10.244.1.9", True))
    sync._on_event("default/a", "Warning", "BackOff", "restarting failed container")
    await wait_for(
        lambda: bool(client.statuses) and bool(client.events), 10, what="reports delivered"
    )
    assert [(r.name, r.phase) for r in client.statuses] == [("a", "Running")]  # latest only
    assert client.events[0].involved_name == "a" and client.events[0].source == "kubelet/node-1"


def test_pod_decisions() -> None:
    pod = pb.Pod(metadata=pb.ObjectMeta(name="p", namespace="default"), node_name="node-1",
                 phase="Running")  # fmt: skip
    assert wants_pod(pod, "node-1") and should_start(pod, "node-1")
    assert not wants_pod(pod, "node-2")
    pod.phase = "Succeeded"
    assert wants_pod(pod, "node-1") and not should_start(pod, "node-1")
    pod.metadata.deleting = True
    assert not wants_pod(pod, "node-1")


async def test_token_is_asked_for_only_when_due(sync: PodSync) -> None:
    client, p = sync.client, pod("a")
    # no token in the answer (none issued): nothing to mount, never asked again
    assert await sync._sources(p) == {TOKEN_KEY: pb.SourceObject(kind=TOKEN_KIND)}
    await sync._sources(p)
    assert client.source_calls == [True]
    now = int(time.time())
    fresh = pb.SourceObject(kind=TOKEN_KIND, name="default", found=True, data={"token": b"1"},
                            expiration_unix=now + 3600, expiration_seconds=3600)  # fmt: skip
    old = pb.SourceObject(kind=TOKEN_KIND, name="default", found=True, data={"token": b"0"},
                          expiration_unix=now + 600, expiration_seconds=3600)  # fmt: skip
    client.token, b = old, pod("b")
    assert (await sync._sources(b))[TOKEN_KEY] == old
    client.token = fresh  # the old one is past 80 % of its lifetime: renewed
    assert (await sync._sources(b))[TOKEN_KEY] == fresh
    assert (await sync._sources(b))[TOKEN_KEY] == fresh  # kept, without a call
    assert client.source_calls == [True, True, True]
    # a new pod under the same name (another uid) gets its own token
    assert (await sync._sources(pod("b", uid="other")))[TOKEN_KEY] == fresh
    assert client.source_calls == [True, True, True, True]
