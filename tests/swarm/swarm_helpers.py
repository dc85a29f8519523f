"""A knemu stack on a single-host Docker Swarm, driven from tests.

``single_host_swarm()`` makes the local engine a one-host swarm only when it is in none
(advertising and listening on 127.0.0.1 only), and afterwards leaves it and removes the
``docker_gwbridge`` network Swarm made, so the engine is left as it was found; an engine that is
already a manager is used as it is and left alone.  ``swarm_stack()`` deploys compose/stack.yaml
under a fresh stack name on its own internal /24 and removes the stack, its network and its
volume afterwards.

The stack's underlay is an internal overlay that the host has no route to, so the tests reach
the api-server through a loopback port forward into its task's network namespace
(``ApiForward``: socat on 127.0.0.1 on the host, nsenter + socat in the task), and run knemu
commands inside the api-server task with ``docker exec``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from knemu import pki, testing
from knemu.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = str(ROOT / "scripts" / "compose")
STACK_FILE = str(ROOT / "compose" / "stack.yaml")
IMAGE = os.environ.get("KNEMU_IMAGE", "knemu:local")


def wait_until(
    predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.5
) -> Any:
    """knemu.testing.wait_until at the pace of a Swarm stack, tolerating errors while tasks
    restart (as compose_helpers.wait_until does for containers)."""
    return testing.wait_until(
        predicate, timeout_s, what=what, interval_s=interval_s, retry_on=(Exception,)
    )


def run(*argv: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} -> {proc.returncode}\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def _used_subnets(client: docker.DockerClient) -> set[ipaddress.IPv4Network]:
    used = set()
    for net in client.networks.list():
        for cfg in (net.attrs.get("IPAM") or {}).get("Config") or []:
            if cfg.get("Subnet", "").count(".") == 3:
                used.add(ipaddress.IPv4Network(cfg["Subnet"]))
    for line in run("ip", "-4", "route").splitlines():
        if "/" in line.split()[0]:
            used.add(ipaddress.IPv4Network(line.split()[0]))
    return used


def free_subnet(client: docker.DockerClient) -> str:
    """A /24 no network or route uses (192.168.150-199: compose tests take 200-249)."""
    used = _used_subnets(client)
    for third in range(150, 200):
        candidate = ipaddress.IPv4Network(f"192.168.{third}.0/24")
        if not any(candidate.overlaps(u) for u in used):
            return str(candidate)
    raise RuntimeError("no free 192.168.150-199.0/24 subnet for a swarm test stack")


@contextmanager
def single_host_swarm() -> Iterator[tuple[docker.DockerClient, bool]]:
    """(engine, whether this made the swarm)."""
    client = docker.from_env()
    state = client.info()["Swarm"]
    if state.get("LocalNodeState") == "active":
        if not state.get("ControlAvailable"):
            pytest.skip("this docker engine is a swarm worker; the swarm tests need a manager")
        yield client, False  # an existing swarm: use it, leave it as it is
        return
    if state.get("LocalNodeState") != "inactive":
        pytest.skip(f"docker engine swarm state is {state.get('LocalNodeState')!r}")
    had_gwbridge = bool(client.networks.list(names=["docker_gwbridge"]))
    port = free_port()
    run("docker", "swarm", "init", "--advertise-addr", "127.0.0.1",
        "--listen-addr", f"127.0.0.1:{port}")  # fmt: skip
    try:
        yield client, True
    finally:
        run("docker", "swarm", "leave", "--force", check=False)
        if not had_gwbridge:
            wait_until(
                lambda: _remove_network(client, "docker_gwbridge"), 30, "docker_gwbridge gone"
            )


def _remove_network(client: docker.DockerClient, name: str) -> bool:
    for net in client.networks.list(names=[name]):
        try:
            net.remove()
        except docker.errors.APIError:
            return False
    return True


class ApiForward:
    """127.0.0.1:PORT on the host -> the api-server task's 127.0.0.1:6443."""

    def __init__(self, pid: int) -> None:
        if not shutil.which("socat") or not shutil.which("nsenter"):
            pytest.skip("the swarm tests need socat and nsenter on the host")
        self.port = free_port()
        inner = (
            f"nsenter -t {pid} -n socat STDIO TCP\\:127.0.0.1\\:6443"  # socat reads "\\:" as ":"
        )
        self.proc = subprocess.Popen(
            ["socat", f"TCP-LISTEN:{self.port},bind=127.0.0.1,reuseaddr,fork",
             f"EXEC:{inner}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


class SwarmStack:
    def __init__(
        self, client: docker.DockerClient, name: str, subnet: str, own_swarm: bool
    ) -> None:
        self.docker = client
        self.own_swarm = own_swarm  # made for the test: its host may be drained
        self.name = name
        self.subnet = subnet
        self.env = dict(
            os.environ, KNEMU_IMAGE=IMAGE, KNEMU_UNDERLAY_SUBNET=subnet,
            KNEMU_LB_POOL=str(ipaddress.ip_network(subnet).network_address + 240) + "/28",
            KNEMU_NODES="3", KNEMU_NODE_RESTART_DELAY="20s",
        )  # fmt: skip
        self._forward: ApiForward | None = None
        self._forward_pid = 0

    def deploy(self) -> None:
        run("docker", "stack", "deploy", "--resolve-image", "never", "-c", STACK_FILE, self.name,
            env=self.env)  # fmt: skip

    def remove(self) -> None:
        if self._forward is not None:
            self._forward.close()
        run("docker", "stack", "rm", self.name, check=False)
        wait_until(
            lambda: not self.containers(stopped=True), 60, f"stack {self.name}'s containers gone"
        )
        wait_until(
            lambda: _remove_network(self.docker, f"{self.name}_underlay"), 60, "network removed"
        )
        for vol in self.docker.volumes.list(
            filters={"label": f"com.docker.stack.namespace={self.name}"}
        ):
            vol.remove(force=True)

    # -- docker ------------------------------------------------------------------------------
    def containers(self, service: str | None = None, stopped: bool = False) -> list[Any]:
        labels = [f"com.docker.stack.namespace={self.name}"]
        if service:
            labels.append(f"com.docker.swarm.service.name={self.name}_{service}")
        found: list[Any] = self.docker.containers.list(all=stopped, filters={"label": labels})
        return found

    def apiserver(self) -> Any:
        return wait_until(lambda: self.containers("apiserver")[:1], 120, "an api-server task")[0]

    def scale(self, nodes: int) -> None:
        run("docker", "service", "scale", "--detach", f"{self.name}_node={nodes}")

    # -- knemu -------------------------------------------------------------------------------
    def knemu(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        cmd = ["docker", "exec", "-i", self.apiserver().id, "knemu", *args]
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=180)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"knemu {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc.stdout

    @property
    def server(self) -> str:
        """The api-server's REST URL on the host's loopback (re-made when its task changes)."""
        c = self.apiserver()
        c.reload()
        pid = int(c.attrs["State"]["Pid"])
        if self._forward is None or pid != self._forward_pid:
            if self._forward is not None:
                self._forward.close()
            self._forward, self._forward_pid = ApiForward(pid), pid
        return self._forward.url

    @property
    def admin(self) -> pki.Credentials:
        """The admin credentials the api-server keeps on its volume, for ``server``."""
        cmd = ["docker", "exec", self.apiserver().id, "cat", "/var/lib/knemu/admin.conf"]
        text = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
        found = pki.from_kubeconfig(yaml.safe_load(text))
        assert found is not None, "the api-server's admin.conf has no current context"
        return found.with_server(self.server)

    def kubeconfig(self, path: Path) -> Path:
        """The admin kubeconfig for the host's forward to the api-server (CLI, kubectl)."""
        return testing.write_kubeconfig(self.admin, path, self.name)

    def rest(self, path: str, timeout: float = 5.0) -> Any:
        with testing.rest_open(self.admin, path, timeout) as resp:
            return json.loads(resp.read())

    def nodes(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.rest("/api/v1/nodes")["items"]
        return items

    def ready_nodes(self) -> list[str]:
        names = []
        for node in self.nodes():
            conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
            if conds.get("Ready") == "True":
                names.append(node["metadata"]["name"])
        return sorted(names)

    def node_table(self, node: str) -> dict[str, Any]:
        table: dict[str, Any] = self.rest(f"/api/v1/nodes/{node}/proxy/table")
        return table


def ensure_image(client: docker.DockerClient) -> None:
    if not client.images.list(name=IMAGE):
        subprocess.run(
            [COMPOSE, "build"], check=True, timeout=900, env=dict(os.environ, KNEMU_IMAGE=IMAGE)
        )


@contextmanager
def swarm_stack() -> Iterator[SwarmStack]:
    with single_host_swarm() as (client, own_swarm):
        ensure_image(client)
        stack = SwarmStack(client, f"ks{secrets.token_hex(3)}", free_subnet(client), own_swarm)
        try:
            stack.deploy()
            wait_until(lambda: len(stack.ready_nodes()) >= 3, 240, "3 Ready nodes")
            yield stack
        finally:
            for c in stack.containers():
                print(f"--- {c.name}\n{c.logs(tail=60).decode(errors='replace')}")
            stack.remove()


def ready_pods(stack: SwarmStack) -> dict[str, str]:
    """name -> node of the ready sample-app pods."""
    pods = stack.rest("/api/v1/namespaces/default/pods?labelSelector=app%3Dsample-app")["items"]
    out = {}
    for p in pods:
        conds = {c["type"]: c["status"] for c in p.get("status", {}).get("conditions", [])}
        if conds.get("Ready") == "True" and "deletionTimestamp" not in p["metadata"]:
            out[p["metadata"]["name"]] = p["spec"]["nodeName"]
    return out
