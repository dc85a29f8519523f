"""A knemu cluster in docker compose, driven from tests (docker SDK + scripts/compose).

Each ComposeCluster gets its own compose project name and its own internal /24, so it never
meets another cluster on the machine, and ``down -v`` removes every container, network and volume
it made.  Commands run inside the api-server container with ``docker exec`` (the image has the
knemu CLI); REST calls go to the api-server container's address on the internal network, which
the host reaches through the bridge docker made for this test.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import yaml
from docker.models.containers import Container

from knemu import pki, testing

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = str(ROOT / "scripts" / "compose")
IMAGE = os.environ.get("KNEMU_IMAGE", "knemu:local")  # scripts/compose and compose.yaml agree


def _used_subnets(client: docker.DockerClient) -> set[str]:
    used: set[str] = set()
    for net in client.networks.list():
        for cfg in (net.attrs.get("IPAM") or {}).get("Config") or []:
            if cfg.get("Subnet"):
                used.add(cfg["Subnet"])
    out = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    used.update(line.split()[0] for line in out.splitlines() if "/" in line.split()[0])
    return used


def free_subnet(client: docker.DockerClient) -> str:
    used = {ipaddress.ip_network(s) for s in _used_subnets(client)}
    for third in range(200, 250):
        candidate = ipaddress.ip_network(f"192.168.{third}.0/24")
        if not any(candidate.overlaps(u) for u in used):
            return str(candidate)
    raise RuntimeError("no free 192.168.200-249.0/24 subnet for a compose test cluster")


def lb_pool(subnet: str) -> str:
    """The LoadBalancer pool of a compose cluster: the top /28 of its node subnet (.240-.254),
    which docker hands to no container."""
    net = ipaddress.ip_network(subnet)
    return str(ipaddress.ip_network(f"{net.network_address + 240}/28"))


class ComposeCluster:
    def __init__(self, project: str, subnet: str, nodes: int) -> None:
        self.project = project
        self.subnet = subnet
        self.nodes = nodes
        self.docker = docker.from_env()
        self._server = ""
        self._admin: pki.Credentials | None = None
        self._state = Path(tempfile.mkdtemp(prefix=f"knemu-{project}-"))  # removed by down
        self.env = dict(
            os.environ,
            COMPOSE_PROJECT_NAME=project,
            KNEMU_UNDERLAY_SUBNET=subnet,
            KNEMU_LB_POOL=lb_pool(subnet),
            KNEMU_SKIP_BUILD="1",
        )

    # -- compose ---------------------------------------------------------------------------
    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [COMPOSE, *args], env=self.env, capture_output=True, text=True, check=check, timeout=300
        )

    def containers(self, service: str | None = None) -> list[Container]:
        labels = [f"com.docker.compose.project={self.project}"]
        if service:
            labels.append(f"com.docker.compose.service={service}")
        found: list[Container] = self.docker.containers.list(all=True, filters={"label": labels})
        return sorted(found, key=lambda c: c.name)

    def container(self, service: str) -> Container:
        found = self.containers(service)
        if not found:
            raise AssertionError(f"no container for service {service} in project {self.project}")
        return found[0]

    def ip_of(self, container: Container) -> str:
        container.reload()
        nets = container.attrs["NetworkSettings"]["Networks"]
        return str(next(iter(nets.values()))["IPAddress"])

    # -- knemu ----------------------------------------------------------------------------
    def knemu(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        """Run the knemu CLI inside the api-server container; return stdout."""
        cmd = ["docker", "exec", "-i", self.container("apiserver").name, "knemu", *args]
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=180)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"knemu {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc.stdout

    @property
    def server(self) -> str:
        """The api-server's REST URL (the last known one while its container is stopped)."""
        ip = self.ip_of(self.container("apiserver"))
        if ip:
            self._server = f"https://{ip}:6443"
        return self._server

    @property
    def admin(self) -> pki.Credentials:
        """The admin credentials the api-server wrote in its data volume (the same after a
        restart: the CA and the admin certificate are kept there)."""
        if self._admin is None:
            text = self.exec_in_apiserver("cat", "/var/lib/knemu/admin.conf")
            found = pki.from_kubeconfig(yaml.safe_load(text))
            assert found is not None, "the api-server's admin.conf has no current context"
            self._admin = found
        return self._admin.with_server(self.server)

    def kubeconfig(self, path: Path | None = None) -> Path:
        """`scripts/compose kubeconfig` (as a user runs it: this cluster's current address, its
        CA and the admin's client certificate) written to ``path`` (a file of the cluster's own
        by default), for the CLI or kubectl on the host: $KUBECONFIG."""
        path = path or self._state / "kubeconfig"
        path.write_text(self.compose("kubeconfig").stdout)
        path.chmod(0o600)
        return path

    def exec_in_apiserver(self, *cmd: str) -> str:
        """Run a command (not the CLI) inside the api-server container; return stdout."""
        argv = ["docker", "exec", self.container("apiserver").name, *cmd]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout

    def rest(self, path: str, timeout: float = 5.0) -> Any:
        with testing.rest_open(self.admin, path, timeout) as resp:
            return json.loads(resp.read())

    def node_table(self, node: str) -> dict[str, Any]:
        table: dict[str, Any] = self.rest(f"/api/v1/nodes/{node}/proxy/table")
        return table

    def ready_nodes(self) -> list[str]:
        names = []
        for node in self.rest("/api/v1/nodes")["items"]:
            conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
            if conds.get("Ready") == "True":
                names.append(node["metadata"]["name"])
        return sorted(names)

    def node_container(self, node: str) -> Container:
        """The container running node ``node`` (matched by the identity it registered with)."""
        obj = self.rest(f"/api/v1/nodes/{node}")
        meta = obj["metadata"]
        identity = meta.get("annotations", {}).get("knemu.dev/identity") or meta.get(
            "labels", {}
        ).get("knemu.dev/identity", "")
        for c in self.containers("node"):
            if identity and identity in (c.attrs["Config"]["Hostname"], c.id, c.name):
                return c
        raise AssertionError(f"no container registered as {node} (identity {identity!r})")


def wait_until(
    predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.5
) -> Any:
    """knemu.testing.wait_until at the pace of a container cluster, tolerating errors while
    containers restart."""
    return testing.wait_until(
        predicate, timeout_s, what=what, interval_s=interval_s, retry_on=(Exception,)
    )


@contextmanager
def compose_cluster(nodes: int = 3) -> Iterator[ComposeCluster]:
    client = docker.from_env()
    if not client.images.list(name=IMAGE):
        subprocess.run([COMPOSE, "build"], check=True, timeout=900)
    cluster = ComposeCluster(f"kt{secrets.token_hex(3)}", free_subnet(client), nodes)
    try:
        cluster.compose("up", "-d", "--scale", f"node={nodes}")
        wait_until(lambda: len(cluster.ready_nodes()) >= nodes, 180, f"{nodes} Ready nodes")
        yield cluster
    finally:
        cluster.compose("logs", "--no-color", "--tail", "200", check=False)
        cluster.compose("down", "-v", "--remove-orphans", "-t", "5", check=False)
        shutil.rmtree(cluster._state, ignore_errors=True)
