"""``knemu chaos`` swarm runtime against a fake Swarm (the Docker SDK surface it uses)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

import pytest

from knemu.cli.commands import chaos, chaos_swarm
from knemu.cli.commands.chaos_swarm import SwarmRuntime, Task, parse_engines, running_tasks, slot_of
from knemu.errors import LocalError


@dataclass
class FakeContainer:
    id: str
    status: str = "running"
    actions: list[str] = field(default_factory=list)

    def kill(self, signal: str) -> None:
        self.actions.append(f"kill {signal}")

    def pause(self) -> None:
        self.actions.append("pause")
        self.status = "paused"

    def unpause(self) -> None:
        self.actions.append("unpause")
        self.status = "running"

    def reload(self) -> None:
        pass

    def restart(self, timeout: int) -> None:
        self.actions.append("restart")


@dataclass
class FakeSwarmNode:
    id: str
    hostname: str
    availability: str = "active"
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.attrs = {
            "Description": {"Hostname": self.hostname},
            "Spec": {"Role": "worker", "Availability": self.availability, "Labels": {}},
        }

    def update(self, spec: dict[str, Any]) -> None:
        self.availability = spec["Availability"]
        self.attrs["Spec"] = spec


@dataclass
class FakeService:
    name: str
    task_list: list[dict[str, Any]] = field(default_factory=list)
    forced: int = 0

    def tasks(self) -> list[dict[str, Any]]:
        return self.task_list

    def force_update(self) -> None:
        self.forced += 1


class FakeCollection:
    def __init__(self, items: dict[str, Any]) -> None:
        self.items = items

    def get(self, key: str) -> Any:
        return self.items[key]

    def list(self, filters: dict[str, str] | None = None) -> list[Any]:
        wanted = (filters or {}).get("name", "")
        return [v for k, v in self.items.items() if wanted in k]


class FakeEngine:
    def __init__(self, host_id: str, containers: dict[str, FakeContainer]) -> None:
        self.host_id = host_id
        self.containers = FakeCollection(dict(containers))
        self.nodes: FakeCollection
        self.services: FakeCollection

    def info(self) -> dict[str, Any]:
        return {"Swarm": {"NodeID": self.host_id, "ControlAvailable": True}}


def task(slot: int, host: str, container: str, state: str = "running") -> dict[str, Any]:
    return {
        "ID": f"task{slot}{state}",
        "Slot": slot,
        "NodeID": host,
        "Status": {"State": state, "ContainerStatus": {"ContainerID": container}},
    }


class FakeApi:
    """The api-server's Node objects, as ApiClient.get/list return them."""

    def __init__(self, identities: dict[str, str]) -> None:
        self.nodes = {
            name: {"metadata": {"name": name, "annotations": {"knemu.dev/identity": ident}}}
            for name, ident in identities.items()
        }

    def get(self, kind: Any, namespace: Any, name: str) -> dict[str, Any]:
        return self.nodes[name]

    def list(self, kind: Any, namespace: Any) -> dict[str, Any]:
        return {"items": list(self.nodes.values())}


@pytest.fixture
def swarm() -> tuple[SwarmRuntime, FakeEngine, FakeEngine]:
    """Two hosts: manager m1 runs slots 1 and 3 (slot 1's old task failed), worker w2 slot 2."""
    local = FakeEngine("m1", {"c1": FakeContainer("c1"), "c3": FakeContainer("c3")})
    remote = FakeEngine("w2", {"c2": FakeContainer("c2"), "ca": FakeContainer("ca")})
    hosts = {"m1": FakeSwarmNode("m1", "manager-1"), "w2": FakeSwarmNode("w2", "worker-2")}
    node_service = FakeService(
        "ks_node",
        [
            task(1, "m1", "c0", "failed"),
            task(1, "m1", "c1"),
            task(2, "w2", "c2"),
            task(3, "m1", "c3"),
        ],
    )
    local.nodes = FakeCollection(hosts)
    local.services = FakeCollection(
        {
            "ks_node": node_service,
            "ks_apiserver": FakeService("ks_apiserver", [task(1, "w2", "ca")]),
        }
    )
    engines = {None: local, "ssh://root@worker-2": remote}
    api = FakeApi({f"node-{i}": f"ks_node-{i}" for i in (1, 2, 3)} | {"node-9": "abc123"})
    rt = SwarmRuntime(api, "ks", {"worker-2": "ssh://root@worker-2"}, engines.__getitem__)  # type: ignore[arg-type]
    return rt, local, remote


def test_identity_names_the_slot() -> None:
    assert slot_of("ks_node-12", "ks_node") == 12
    assert slot_of("ks_node-x", "ks_node") is None
    assert slot_of("other_node-1", "ks_node") is None
    assert slot_of("0123456789ab", "ks_node") is None


def test_running_tasks_skip_dead_and_containerless_ones() -> None:
    tasks = [task(1, "m1", "old", "shutdown"), task(1, "m1", "new"), task(2, "m1", "", "running")]
    assert running_tasks(tasks) == {1: Task(1, "task1running", "m1", "new")}


def test_parse_engines() -> None:
    assert parse_engines(["a=tcp://1.2.3.4:2376,b=ssh://root@b", "", "c=ssh://c"]) == {
        "a": "tcp://1.2.3.4:2376",
        "b": "ssh://root@b",
        "c": "ssh://c",
    }
    with pytest.raises(LocalError, match="expected HOST=URL"):
        parse_engines(["worker-2"])


def test_kill_goes_to_the_engine_of_the_host_running_the_task(swarm: Any) -> None:
    rt, local, remote = swarm
    line = rt.kill("node-2")
    assert "task ks_node.2 on host worker-2 killed (SIGKILL)" in line
    assert remote.containers.get("c2").actions == ["kill SIGKILL"]
    assert rt.kill("node-1").startswith("node-1: task ks_node.1 on host manager-1 killed")
    assert local.containers.get("c1").actions == ["kill SIGKILL"]


def test_stop_and_start_pause_and_unpause(swarm: Any) -> None:
    rt, local, _ = swarm
    assert "frozen (docker pause)" in rt.stop("node-3")
    assert "thawed" in rt.start("node-3")
    assert "already running" in rt.start("node-3")
    assert local.containers.get("c3").actions == ["pause", "unpause"]


def test_remote_host_without_an_engine_is_a_clear_error(swarm: Any) -> None:
    rt, _, _ = swarm
    rt.engines = {}
    with pytest.raises(LocalError, match="--engine worker-2=ssh://USER@worker-2"):
        rt.kill("node-2")


def test_a_node_that_is_not_a_task_of_the_stack(swarm: Any) -> None:
    rt, local, _ = swarm
    with pytest.raises(LocalError, match="identity 'abc123', not a task of ks_node"):
        rt.kill("node-9")
    local.services.get("ks_node").task_list = [task(1, "m1", "c1", "failed")]
    with pytest.raises(LocalError, match="slot 1 of ks_node has no running task"):
        rt.kill("node-1")


def test_restart_of_a_control_plane_service_forces_a_new_task(swarm: Any) -> None:
    rt, local, remote = swarm
    assert "apiserver: task ks_apiserver.1 on host worker-2 killed" in rt.kill("apiserver")
    assert remote.containers.get("ca").actions == ["kill SIGKILL"]
    assert "service ks_apiserver restarted" in rt.restart("apiserver")
    assert local.services.get("ks_apiserver").forced == 1
    with pytest.raises(LocalError, match="no service ks_dns"):
        rt.restart("dns")


def test_drain_names_every_knemu_node_on_the_host(swarm: Any) -> None:
    rt, local, _ = swarm
    lines = rt.set_availability("manager-1", "drain")
    assert lines == [
        "host manager-1: availability drain",
        "node-1: on manager-1, its task stops now",
        "node-3: on manager-1, its task stops now",
    ]
    assert local.nodes.get("m1").availability == "drain"
    assert local.nodes.get("m1").attrs["Spec"]["Role"] == "worker"  # the rest of the spec kept
    assert rt.set_availability("m1", "active") == ["host m1: availability active"]
    with pytest.raises(LocalError, match="no swarm host 'nope'; hosts: manager-1, worker-2"):
        rt.set_availability("nope", "drain")


def test_chaos_cli_has_the_swarm_runtime_and_host_commands() -> None:
    parser = argparse.ArgumentParser()
    chaos.add_arguments(parser)
    args = parser.parse_args(
        ["--runtime", "swarm", "--stack", "ks", "--engine", "w=ssh://w", "drain-host", "w"]
    )
    assert (args.runtime, args.stack, args.engines, args.host) == (
        "swarm",
        "ks",
        ["w=ssh://w"],
        "w",
    )
    assert chaos.HANDLERS["drain-host"] is chaos_swarm.HANDLERS["drain-host"]
    assert "activate-host" in chaos.HANDLERS
