"""``knemu chaos`` on a Docker Swarm stack (compose/stack.yaml): tasks, their containers, hosts.

A knemu node runs as one task of the service ``<stack>_node``; the task's hostname,
``<stack>_node-<slot>``, is the identity the node registered with (label/annotation
``knemu.dev/identity``), so a node name leads to a slot and the slot to its running task, its
container and the Swarm host that runs it.

* ``kill-node`` SIGKILLs that container through the Docker API of its host (the local engine
  on a single-host swarm; ``--engine HOST=URL`` for the others).  Swarm sees the task fail and
  starts the slot again after the service's restart delay, and the new task registers as the
  same node (same identity): a crash followed by a reboot.
* ``stop-node``/``start-node`` pause and unpause the container (Swarm does not notice a frozen
  container until its health check gives up, after about a minute).
* ``drain-host HOST`` is ``docker node update --availability drain HOST``: Swarm stops every
  task on the host at once and reschedules them elsewhere -- many knemu nodes dying together,
  as when a rack loses power.  ``activate-host`` makes the host schedulable again.
* ``kill``/``stop``/``start`` work on ``apiserver`` and ``dns`` too (their one task);
  ``restart apiserver|dns`` forces a new task for that service (``docker service update
  --force``).

Link impairments (``delay``, ``partition``, ...) do not depend on the runtime: the agents apply
them (knemu.cli.chaos).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from knemu.cli.client import ApiClient, resolve_kind
from knemu.errors import LocalError, RemoteError

DEFAULT_STACK = "knemu"
CONTROL_PLANE = ("apiserver", "dns")
ENGINES_ENV = "KNEMU_SWARM_ENGINES"  # "HOST=URL,HOST=URL": Docker APIs of the other hosts


@dataclass(frozen=True)
class Task:
    """A running task of the node service, as the Swarm API describes it."""

    slot: int
    task_id: str
    host_id: str
    container_id: str


def node_service(stack: str) -> str:
    return f"{stack}_node"


def slot_of(identity: str, service: str) -> int | None:
    """The slot in identity ``<service>-<slot>`` (stack.yaml's hostname template), else None."""
    m = re.fullmatch(re.escape(service) + r"-(\d+)", identity)
    return int(m.group(1)) if m else None


def running_tasks(tasks: list[dict[str, Any]]) -> dict[int, Task]:
    """slot -> its running task, from the API's task list (older tasks of a slot left out)."""
    found: dict[int, Task] = {}
    for t in tasks:
        status = t.get("Status") or {}
        container = (status.get("ContainerStatus") or {}).get("ContainerID", "")
        if status.get("State") != "running" or not container or "Slot" not in t:
            continue
        found[int(t["Slot"])] = Task(int(t["Slot"]), t["ID"], t.get("NodeID", ""), container)
    return found


def parse_engines(values: list[str]) -> dict[str, str]:
    """``HOST=URL`` pairs (flags, or the comma-separated environment variable) as a mapping."""
    engines: dict[str, str] = {}
    for value in values:
        for item in filter(None, (v.strip() for v in value.split(","))):
            host, sep, url = item.partition("=")
            if not sep or not host or not url:
                raise LocalError(
                    f"--engine {item!r}: expected HOST=URL, e.g. worker-2=ssh://root@worker-2 "
                    "or worker-2=tcp://10.0.0.12:2376"
                )
            engines[host] = url
    return engines


def _docker_from(url: str | None) -> Any:
    try:
        import docker
    except ImportError:  # pragma: no cover - docker is a dependency of the chaos extra
        raise LocalError("knemu chaos needs the docker SDK: pip install 'knemu[chaos]'") from None
    try:
        client = docker.DockerClient(base_url=url) if url else docker.from_env()
        client.ping()
    except Exception as exc:
        raise RemoteError(f"cannot reach the docker engine {url or '(local)'} ({exc})") from None
    return client


class SwarmRuntime:
    """The tasks of one knemu stack; ``docker_for(url)`` opens an engine (None: the local one)."""

    def __init__(
        self,
        client: ApiClient,
        stack: str = DEFAULT_STACK,
        engines: Mapping[str, str] | None = None,
        docker_for: Callable[[str | None], Any] = _docker_from,
    ) -> None:
        self.api = client
        self.stack = stack
        self.engines = dict(engines or {})
        self._docker_for = docker_for
        self.docker = docker_for(None)
        info = self.docker.info().get("Swarm") or {}
        if not info.get("ControlAvailable"):
            raise LocalError(
                "the local docker engine is not a swarm manager; run knemu chaos on a manager "
                "(or use --runtime docker for a compose cluster)"
            )
        self.local_host_id: str = info.get("NodeID", "")

    # -- finding things ----------------------------------------------------------------------

    def _service(self, name: str) -> Any:
        found = self.docker.services.list(filters={"name": name})
        exact = [s for s in found if s.name == name]
        if not exact:
            raise LocalError(
                f"stack {self.stack!r} has no service {name}; deployed with "
                f"`docker stack deploy -c compose/stack.yaml {self.stack}`? (--stack NAME)"
            )
        return exact[0]

    def _host_name(self, host_id: str) -> str:
        return str(self.docker.nodes.get(host_id).attrs["Description"]["Hostname"])

    def _engine(self, host_id: str) -> Any:
        if host_id == self.local_host_id:
            return self.docker
        host = self._host_name(host_id)
        url = self.engines.get(host) or self.engines.get(host_id)
        if not url:
            raise LocalError(
                f"the task runs on swarm host {host}, not this one: give its Docker API with "
                f"--engine {host}=ssh://USER@{host} (or tcp://ADDRESS:2376; env {ENGINES_ENV})"
            )
        return self._docker_for(url)

    def _identity(self, node: str) -> str:
        meta = self.api.get(resolve_kind("nodes"), None, node)["metadata"]
        return str(
            meta.get("annotations", {}).get("knemu.dev/identity")
            or meta.get("labels", {}).get("knemu.dev/identity", "")
        )

    def _node_task(self, node: str) -> tuple[str, Task]:
        service = node_service(self.stack)
        identity = self._identity(node)
        slot = slot_of(identity, service)
        if slot is None:
            raise LocalError(
                f"node {node} has identity {identity!r}, not a task of {service} "
                f"(expected {service}-SLOT); is this the right --stack?"
            )
        task = running_tasks(self._service(service).tasks()).get(slot)
        if task is None:
            raise LocalError(
                f"{node}: slot {slot} of {service} has no running task now "
                "(killed, or its host drained?); Swarm starts it again by itself"
            )
        return service, task

    def _control_plane_task(self, target: str) -> tuple[str, Task]:
        """The running task of the apiserver or dns service (found from Swarm alone: the
        api-server may be the thing that is down)."""
        service = f"{self.stack}_{target}"
        tasks = running_tasks(self._service(service).tasks())
        if not tasks:
            raise LocalError(f"{service} has no running task now; Swarm starts it by itself")
        return service, tasks[min(tasks)]

    def _container(self, target: str) -> tuple[Any, str]:
        """The target's container, on the engine of its host, and where it runs (for output)."""
        if target in CONTROL_PLANE:
            service, task = self._control_plane_task(target)
        else:
            service, task = self._node_task(target)
        container = self._engine(task.host_id).containers.get(task.container_id)
        return container, f"task {service}.{task.slot} on host {self._host_name(task.host_id)}"

    # -- the Runtime protocol ------------------------------------------------------------------

    def kill(self, target: str) -> str:
        container, where = self._container(target)
        container.kill(signal="SIGKILL")
        return (
            f"{target}: {where} killed (SIGKILL); Swarm starts it again after the service's "
            "restart delay"
        )

    def stop(self, target: str) -> str:
        container, where = self._container(target)
        container.pause()
        return f"{target}: {where} frozen (docker pause)"

    def start(self, target: str) -> str:
        container, where = self._container(target)
        container.reload()
        if container.status == "paused":
            container.unpause()
            return f"{target}: {where} thawed"
        return f"{target}: {where} is already running"

    def restart(self, target: str) -> str:
        if target in CONTROL_PLANE:
            service = self._service(f"{self.stack}_{target}")
            service.force_update()
            return f"{target}: service {service.name} restarted (docker service update --force)"
        container, where = self._container(target)
        container.restart(timeout=5)
        return f"{target}: {where} restarted"

    # -- hosts -------------------------------------------------------------------------------

    def set_availability(self, host: str, availability: str) -> list[str]:
        """Drain or activate a Swarm host; name the knemu nodes whose tasks run there."""
        found = [
            n
            for n in self.docker.nodes.list()
            if host in (n.id, n.attrs["Description"]["Hostname"])
        ]
        if not found:
            names = sorted(n.attrs["Description"]["Hostname"] for n in self.docker.nodes.list())
            raise LocalError(f"no swarm host {host!r}; hosts: {', '.join(names)}")
        swarm_node = found[0]
        # Named before the drain: the api-server itself may run on the drained host.  (Not
        # asked on activate: the api-server may be down until the host takes tasks again.)
        on_host = self._nodes_on(swarm_node.id) if availability == "drain" else []
        swarm_node.update(dict(swarm_node.attrs["Spec"], Availability=availability))
        lines = [f"host {host}: availability {availability}"]
        return lines + [f"{name}: on {host}, its task stops now" for name in on_host]

    def _nodes_on(self, host_id: str) -> list[str]:
        """Names of the knemu nodes whose running tasks are on ``host_id``."""
        service = node_service(self.stack)
        slots = {
            t.slot for t in running_tasks(self._service(service).tasks()).values()
            if t.host_id == host_id
        }  # fmt: skip
        names = []
        for node in self.api.list(resolve_kind("nodes"), None).get("items", []):
            meta = node["metadata"]
            identity = (meta.get("annotations") or {}).get("knemu.dev/identity", "")
            if slot_of(identity, service) in slots:
                names.append(str(meta["name"]))
        return sorted(names)


# -- commands ----------------------------------------------------------------------------------


def runtime_from_args(args: argparse.Namespace) -> SwarmRuntime:
    engines = parse_engines([os.environ.get(ENGINES_ENV, ""), *(args.engines or [])])
    return SwarmRuntime(args.client, args.stack, engines)


def _host_command(availability: str) -> Callable[[argparse.Namespace], list[str]]:
    def run(args: argparse.Namespace) -> list[str]:
        return runtime_from_args(args).set_availability(args.host, availability)

    return run


HANDLERS: dict[str, Callable[[argparse.Namespace], list[str]]] = {
    "drain-host": _host_command("drain"),
    "activate-host": _host_command("active"),
}


def add_arguments(parser: argparse.ArgumentParser, sub: Any) -> None:
    """Swarm's options on ``knemu chaos`` and its host commands (``sub``: the subparsers)."""
    parser.add_argument(
        "--stack",
        default=os.environ.get("KNEMU_STACK", DEFAULT_STACK),
        help="swarm stack name (docker stack deploy ... NAME; default knemu or $KNEMU_STACK)",
    )
    parser.add_argument(
        "--engine",
        dest="engines",
        action="append",
        metavar="HOST=URL",
        help=f"Docker API of another swarm host, for kill/stop on it (also ${ENGINES_ENV})",
    )
    for name, help_text in (
        ("drain-host", "drain a swarm host: every knemu node on it dies at once"),
        ("activate-host", "make a drained swarm host schedulable again"),
    ):
        sub.add_parser(name, help=help_text).add_argument("host", metavar="HOST")


def is_swarm_stack(stack: str) -> bool:
    """True when the local engine is a swarm manager running ``<stack>_node`` (auto runtime)."""
    try:
        client = _docker_from(None)
        if not (client.info().get("Swarm") or {}).get("ControlAvailable"):
            return False
        name = node_service(stack)
        return any(s.name == name for s in client.services.list(filters={"name": name}))
    except (LocalError, RemoteError):
        return False
