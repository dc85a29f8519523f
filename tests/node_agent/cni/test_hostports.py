"""hostPort in the agent on loopback: relays, release, busy ports, kubelet admission, GET /cni.

A loopback echo server stands in for podIP:containerPort; 127.0.0.1 is the "node IP".
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from knemu.config import AgentConfig
from knemu.node_agent.cni import conflist as cni, hostports as agent_hostports
from knemu.node_agent.cni.hostports import HostPorts
from knemu.node_agent.kubelet.pod_sync import PodSync
from knemu.proto import knemu_pb2 as pb
from knemu.testing import free_port, wait_for

from .._echo import echo_server
from ..kubelet.kubelet_helpers import fake_pod_sync, make_kubelet_api

NODE_IP = "127.0.0.1"


def web_pod(name: str, host_port: int, container_port: int, protocol: str = "TCP",
            node: str = "node-1") -> pb.Pod:  # fmt: skip
    port = pb.ContainerPort(container_port=container_port, host_port=host_port,
                            protocol=protocol)  # fmt: skip
    return pb.Pod(
        metadata=pb.ObjectMeta(name=name, namespace="default", uid=f"uid-{name}"),
        node_name=node, phase="Pending",
        containers=[pb.Container(name="web", image="nginx", ports=[port])],
    )  # fmt: skip


@pytest.fixture
async def pod_port() -> AsyncIterator[int]:
    """The 'container port': TCP and UDP echo on one loopback port."""
    async with echo_server(NODE_IP, b"pod:") as port:
        yield port


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str, str]] = []

    def __call__(self, key: str, type_: str, reason: str, message: str) -> None:
        self.seen.append((key, type_, reason, message))

    def reasons(self) -> list[str]:
        return [reason for _, _, reason, _ in self.seen]


@pytest.fixture
async def hostports() -> AsyncIterator[tuple[HostPorts, Events]]:
    events = Events()
    hp = HostPorts(events)
    loop = asyncio.create_task(hp.run(NODE_IP))
    try:
        yield hp, events
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await hp.close()


async def tcp_ask(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(NODE_IP, port)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.readexactly(len(data) + 4), 5)
    finally:
        writer.close()


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(NODE_IP, port)
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:  # queued on the listener as it closed: ask again
        return False
    writer.close()
    return False


async def wait_answers(port: int) -> None:
    async def ok() -> bool:
        try:
            return await tcp_ask(port, b"hi") == b"pod:hi"
        except OSError:
            return False

    await wait_for(ok, 5, what=f"an answer on {port}", interval_s=0.02)


async def test_tcp_host_port_reaches_the_pod_until_released(
    hostports: tuple[HostPorts, Events], pod_port: int
) -> None:
    hp, events = hostports
    host_port = free_port(NODE_IP, socket.SOCK_STREAM)
    assert hp.admit(web_pod("web", host_port, pod_port)) is None
    await asyncio.sleep(0)
    assert await refused(host_port)  # reserved, not published: the pod has no address yet
    hp.attach("default/web", NODE_IP)
    await wait_answers(host_port)
    assert hp.stats.connections >= 1 and events.seen == []
    hp.release("default/web")
    await wait_for(lambda: refused(host_port), 5, what="the hostPort to close", interval_s=0.02)


async def test_udp_host_port_relays_both_ways(
    hostports: tuple[HostPorts, Events], pod_port: int
) -> None:
    hp, _ = hostports
    host_port = free_port(NODE_IP, socket.SOCK_DGRAM)
    hp.admit(web_pod("dns", host_port, pod_port, "UDP"))
    hp.attach("default/dns", NODE_IP)
    await wait_for(lambda: bool(hp.proxy.relays), 5, what="the UDP hostPort listener")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(b"q", (NODE_IP, host_port))
        assert await asyncio.to_thread(s.recv, 100) == b"pod:q"


async def test_a_port_held_by_another_process_is_one_event_then_retried(
    hostports: tuple[HostPorts, Events], pod_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_hostports, "RETRY_S", 0.1)
    hp, events = hostports
    holder = socket.socket()
    holder.bind((NODE_IP, 0))
    holder.listen()
    busy = int(holder.getsockname()[1])
    try:
        hp.admit(web_pod("web", busy, pod_port))
        hp.attach("default/web", NODE_IP)
        await wait_for(
            lambda: "HostPortUnavailable" in events.reasons(), 5, what="the busy-port event"
        )
        key, type_, _, message = events.seen[0]
        assert (key, type_) == ("default/web", "Warning") and f"hostPort {busy}/TCP" in message
        await asyncio.sleep(0.5)  # several retries fail meanwhile: still one event
        assert events.reasons() == ["HostPortUnavailable"]
    finally:
        holder.close()
    await wait_answers(busy)  # the retry took the port once it was free


async def test_without_portmap_nothing_is_published_and_the_pod_is_told(pod_port: int) -> None:
    events = Events()
    hp = HostPorts(events, enabled=False)
    host_port = free_port(NODE_IP, socket.SOCK_STREAM)
    assert hp.admit(web_pod("web", host_port, pod_port)) is None
    hp.attach("default/web", NODE_IP)
    assert hp.desired(NODE_IP) == []
    assert events.reasons() == ["HostPortNotPublished"] and "portmap" in events.seen[0][3]
    assert hp.admit(web_pod("other", host_port, pod_port)) is not None  # still admitted


# -- the kubelet's admission, in PodSync ---------------------------------------------------


@pytest.fixture
async def sync(tmp_path: Path) -> AsyncIterator[PodSync]:
    async with fake_pod_sync(tmp_path) as s:
        yield s


async def test_a_clash_on_one_node_is_rejected_like_the_kubelet_does(sync: PodSync) -> None:
    informer, runtime, client = sync.cache, sync.runtime, sync.client
    informer.put(web_pod("first", 8088, 80))
    await sync.on_synced()
    informer.put(web_pod("second", 8088, 8080))
    sync.kick("default/second")
    sync.kick("default/second")  # a second event for it: still one rejection
    await wait_for(
        lambda: bool(client.statuses) and len(client.events) >= 1, 5, what="the rejection"
    )
    await wait_for(lambda: not sync._workers, 5, what="idle")
    assert runtime.started == ["default/first@uid-first"]
    report = client.statuses[-1]
    assert (report.name, report.phase, report.reason) == ("second", "Failed", "NodePorts")
    rejected = "Pod was rejected: Predicate NodePorts failed: node(s) didn't have free ports"
    assert report.message.startswith(rejected)
    assert [(e.involved_name, e.type, e.reason) for e in client.events] == [
        ("second", "Warning", "NodePorts")]  # fmt: skip
    assert "default/first" in client.events[0].message
    assert [r["pod"] for r in sync.hostports.table.snapshot()] == ["default/first"]


async def test_ports_are_freed_when_the_pod_goes_and_taken_by_the_next(sync: PodSync) -> None:
    informer, runtime = sync.cache, sync.runtime
    informer.put(web_pod("first", 8088, 80))
    await sync.on_synced()
    del informer.pods[("default", "first")]
    sync.kick("default/first")
    await wait_for(lambda: runtime.stopped == ["default/first"], 5, what="first stopped")
    informer.put(web_pod("next", 8088, 80))
    sync.kick("default/next")
    await wait_for(lambda: "default/next" in sync.handles, 5, what="next started")
    assert [r["pod"] for r in sync.hostports.table.snapshot()] == ["default/next"]


async def test_a_finished_pod_frees_its_port_and_one_never_started_does_too(
    sync: PodSync,
) -> None:
    informer, runtime = sync.cache, sync.runtime
    informer.put(web_pod("job", 9000, 80))
    await sync.on_synced()
    done = web_pod("job", 9000, 80)
    done.phase = "Succeeded"
    informer.put(done)
    sync.kick("default/job")
    await wait_for(lambda: not sync.hostports.table.holds("default/job"), 5, what="port freed")
    assert "default/job" in sync.handles  # kept for its logs
    runtime.failures["default/stuck"] = 100
    informer.put(web_pod("stuck", 9001, 80))
    sync.kick("default/stuck")
    await wait_for(lambda: sync.hostports.table.holds("default/stuck"), 5, what="reserved")
    del informer.pods[("default", "stuck")]
    sync.kick("default/stuck")
    await wait_for(lambda: not sync.hostports.table.holds("default/stuck"), 5, what="released")


# -- GET /cni ------------------------------------------------------------------------------


@pytest.fixture
def conf(tmp_path: Path) -> Iterator[cni.CniConfig]:
    yield cni.install(AgentConfig(state_dir=str(tmp_path)), "node-1", "10.244.1.0/24",
                      "10.244.1.1")  # fmt: skip


async def test_cni_is_served_byte_for_byte(conf: cni.CniConfig) -> None:
    served: list[cni.CniConfig] = []
    server = make_kubelet_api(cni=lambda: served[0] if served else None)
    await server.start(NODE_IP, 0)
    base = f"http://{NODE_IP}:{server.port}"
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/cni") as r:
                assert r.status == 404 and "still starting" in (await r.json())["message"]
            served.append(conf)
            async with s.get(f"{base}/cni") as r:
                assert r.status == 200 and r.content_type == "application/json"
                text = await r.text()
    finally:
        await server.stop()
    assert conf.path is not None and text == conf.path.read_text()
    assert json.loads(text)["plugins"][0]["ipam"]["ranges"][0][0]["subnet"] == "10.244.1.0/24"
