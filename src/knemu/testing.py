"""Test helpers shipped in the package (used by the CLI's tests and the integration tests).

* ``wait_for(predicate, timeout_s)``: poll a condition with a deadline, never a bare sleep
  (``wait_until``: the same without an event loop).
* ``apiserver_process(tmp_path, **config)``: the api-server in a subprocess on free loopback
  ports, to SIGKILL and restart on the same data; ``apiserver_inprocess``: in this loop.
* ``FakeNode(grpc_target, name)``: a node without a data plane that registers (VTEP MAC, IP in
  127.0.0.0/8), renews its lease and reports its pods Running+Ready with podCIDR addresses;
  ``fake_cluster(api, nodes=3)``: that many.  Fakes with real behaviour, not mocks (like
  trio.testing); all they start is stopped on exit, even when the test fails.
* ``admin_credentials(data_dir)``, ``rest_session(creds)``, ``rest_open(creds, path)``: the
  admin's credentials an api-server wrote (``<data_dir>/admin.conf``) and clients that use
  them; every test reaches the REST API through these (or the CLI with that kubeconfig).
* ``knemu.testing_traffic``: the chaos tests' client pod, a bounded request loop, and its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import ipaddress
import itertools
import json
import logging
import os
import secrets
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import knemu
from knemu import pki
from knemu.errors import KnemuError, RemoteError
from knemu.proto import knemu_pb2 as pb
from knemu.proto.client import ClusterClient, Informer

POLL_INTERVAL_S = 0.01
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
PORT_ATTEMPTS = 3
MAX_PODS = 254  # a FakeNode hands out at most this many pod IPs (a /24 less .1)
log = logging.getLogger(__name__)


async def wait_for(
    predicate: Callable[[], Any],
    timeout_s: float = 10.0,
    *,
    what: str = "",
    interval_s: float = POLL_INTERVAL_S,
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns a truthy value; return that value.

    Raises TimeoutError naming ``what`` (or the predicate) after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() >= deadline:
            name = what or getattr(predicate, "__name__", repr(predicate))
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {name}")
        await asyncio.sleep(interval_s)


def wait_until(
    predicate: Callable[[], Any],
    timeout_s: float = 10.0,
    *,
    what: str = "",
    interval_s: float = POLL_INTERVAL_S,
    retry_on: tuple[type[BaseException], ...] = (),
) -> Any:
    """``wait_for`` for code without an event loop (tests driving the synchronous CLI).

    Exceptions of the ``retry_on`` types count as "not yet" (a cluster mid-restart answers with
    errors for a while); the last one is named if the wait times out.
    """
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
        except retry_on as exc:
            result, last_error = None, exc
        if result:
            return result
        if time.monotonic() >= deadline:
            name = what or getattr(predicate, "__name__", repr(predicate))
            detail = f" (last error: {last_error!r})" if last_error is not None else ""
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {name}{detail}")
        time.sleep(interval_s)


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    """A port free right now on ``host`` (the kernel picks it; SO_REUSEADDR-safe), TCP or
    ``kind=socket.SOCK_DGRAM`` for UDP."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# ---- credentials ---------------------------------------------------------------------------


def admin_credentials(data_dir: Path | str) -> pki.Credentials:
    """The admin credentials the api-server with ``data_dir`` wrote when it started serving."""
    import yaml

    path = Path(data_dir) / pki.ADMIN_KUBECONFIG
    creds = pki.from_kubeconfig(yaml.safe_load(path.read_text()), path.parent)
    if creds is None:
        raise RemoteError(f"{path} has no current context")
    return creds


def rest_session(creds: pki.Credentials, **kwargs: Any) -> Any:
    """An ``aiohttp.ClientSession`` presenting ``creds`` (TLS with the cluster CA, the client
    certificate, the bearer token); ``kwargs`` go to the session (``base_url``, ...)."""
    import aiohttp

    headers = {**creds.headers(), **kwargs.pop("headers", {})}
    connector = kwargs.pop("connector", None) or aiohttp.TCPConnector(
        ssl=creds.ssl_context() or False, limit=kwargs.pop("limit", 100)
    )
    return aiohttp.ClientSession(connector=connector, headers=headers, **kwargs)


def write_kubeconfig(creds: pki.Credentials, path: Path | str, name: str = "knemu") -> Path:
    """``creds`` as a kubeconfig file (mode 0600) for kubectl or the official client."""
    import yaml

    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(creds.kubeconfig(name), out, sort_keys=False)
    return path


def rest_open(creds: pki.Credentials, path: str, timeout_s: float = 10.0, **request: Any) -> Any:
    """``urllib.request.urlopen`` of ``creds.server + path`` with ``creds``; ``request`` goes to
    ``urllib.request.Request`` (``data``, ``method``, ``headers``)."""
    req = urllib.request.Request(creds.server + path, **request)
    for key, value in creds.headers().items():
        req.add_header(key, value)
    return urllib.request.urlopen(req, timeout=timeout_s, context=creds.ssl_context())


# ---- the api-server in a subprocess ------------------------------------------------------

# Runs ``knemu.apiserver.server.run(config)``; the config arrives as JSON in argv[1] so the
# child needs no CLI of its own (docs/INTERFACES.md: run(config: ApiServerConfig) -> int).
_BOOTSTRAP = """
import ctypes, json, logging, signal, sys
try:  # die with the test process that started us (Linux prctl PR_SET_PDEATHSIG = 1)
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)
except (AttributeError, OSError):
    pass
from knemu.config import ApiServerConfig, Timings
values = json.loads(sys.argv[1])
if isinstance(values.get("timings"), dict):
    values["timings"] = Timings.from_mapping(values["timings"])
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
from knemu.apiserver.server import run
sys.exit(run(ApiServerConfig.from_mapping(values)))
"""


@dataclass
class ApiServerProcess:
    """A running ``knemu apiserver`` child process (see ``apiserver_process``)."""

    data_dir: Path
    rest_url: str
    grpc_target: str
    log_path: Path
    config: dict[str, Any]
    process: asyncio.subprocess.Process | None = None

    @property
    def admin(self) -> pki.Credentials:
        """The admin's credentials (written by the server once it serves)."""
        return admin_credentials(self.data_dir).with_server(self.rest_url)

    @property
    def pid(self) -> int:
        """The process id (of the last process started: check ``process.returncode``)."""
        return self.process.pid if self.process is not None else 0

    async def start(self) -> None:
        env = dict(os.environ)
        src = str(Path(knemu.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
        argv = [sys.executable, "-c", _BOOTSTRAP, json.dumps(self.config)]
        with open(self.log_path, "ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, env=env
            )
        await wait_for(self._ready, START_TIMEOUT_S, what=f"api-server ready ({self.rest_url})")

    async def _ready(self) -> bool:
        if self.process is None or self.process.returncode is not None:
            status = self.process.returncode if self.process else None
            tail = self.log_tail()
            raise RemoteError(f"api-server exited ({status}) starting; {self.log_path}:\n{tail}")
        return await asyncio.to_thread(self._probe)

    def _probe(self) -> bool:
        if not (self.data_dir / pki.ADMIN_KUBECONFIG).exists():
            return False
        try:
            with rest_open(self.admin, "/healthz", timeout_s=1) as reply:
                if reply.status != 200:
                    return False
            host, port = self.grpc_target.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=1):
                return True
        except OSError:
            return False

    def log_tail(self, lines: int = 30) -> str:
        """The end of the process's log (stdout and stderr), for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    async def kill(self, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` and wait (bounded) for the process to exit; returns its status."""
        if self.process is None or self.process.returncode is not None:
            return (self.process.returncode or 0) if self.process else 0
        self.process.send_signal(sig)
        try:
            return await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            self.process.kill()
            return await self.process.wait()

    async def restart(self) -> None:
        """Stop (SIGTERM, then SIGKILL) if running, and start again: same ports, same data."""
        await self.kill(signal.SIGTERM)  # a no-op when it is not running
        await self.start()


@contextlib.asynccontextmanager
async def apiserver_process(
    tmp_path: Path | str, **config_overrides: Any
) -> AsyncIterator[ApiServerProcess]:
    """``knemu.apiserver.server`` in a subprocess on free loopback ports; killed on exit.

    ``config_overrides`` are ApiServerConfig fields (``timings`` as a dict or Timings).
    """
    base = Path(tmp_path) / f"apiserver-{secrets.token_hex(3)}"
    base.mkdir(parents=True)
    api = _new_process(base, config_overrides)
    try:
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                await api.start()
                break
            except RemoteError:
                # Another test may have taken a port between free_port() and the bind.
                if attempt == PORT_ATTEMPTS or "cannot listen" not in api.log_tail():
                    raise
                api = _new_process(base, config_overrides)
        yield api
    finally:
        await api.kill(signal.SIGTERM)


def _new_process(base: Path, overrides: dict[str, Any]) -> ApiServerProcess:
    rest, grpc = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    config = _config(base, rest, grpc, overrides)
    return ApiServerProcess(
        data_dir=Path(config["data_dir"]),
        rest_url=f"https://{rest}",
        grpc_target=grpc,
        log_path=base / f"apiserver-{secrets.token_hex(2)}.log",
        config=config,
    )


def _config(base: Path, rest: str, grpc: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """ApiServerConfig fields as JSON values; nested dataclasses (Timings) become dicts."""
    config: dict[str, Any] = {"data_dir": str(base / "data"), "listen": rest, "grpc_listen": grpc}
    for key, value in overrides.items():
        config[key] = (
            asdict(value) if is_dataclass(value) and not isinstance(value, type) else value
        )
    Path(config["data_dir"]).mkdir(parents=True, exist_ok=True)
    return config


@contextlib.asynccontextmanager
async def apiserver_inprocess(tmp_path: Path | str, **config_overrides: Any) -> AsyncIterator[Any]:
    """The whole api-server in this event loop on port 0; yields ``server.ApiServer``.

    Its ``rest_url``, ``grpc_target``, ``store`` and ``hub`` are set.  Cheaper than
    ``apiserver_process`` when a test does not need to kill the process.
    """
    from knemu.apiserver.server import ApiServer  # lazily: most helpers need only knemu.proto
    from knemu.config import ApiServerConfig, Timings

    base = Path(tmp_path) / f"apiserver-{secrets.token_hex(3)}"
    values = _config(base, "127.0.0.1:0", "127.0.0.1:0", config_overrides)
    if isinstance(values.get("timings"), dict):
        values["timings"] = Timings.from_mapping(values["timings"])
    async with ApiServer(ApiServerConfig.from_mapping(values)) as server:
        yield server


# ---- fake nodes --------------------------------------------------------------------------


def fake_vtep_mac(name: str) -> str:
    """A locally administered unicast MAC (first octet 0x02) derived from the node name."""
    return ":".join(f"{b:02x}" for b in b"\x02" + hashlib.sha256(name.encode()).digest()[:5])


def fake_internal_ip(name: str) -> str:
    """An address in 127.0.0.0/8 (loopback: nothing leaves the machine) from the name."""
    a, b, c = hashlib.sha256(name.encode()).digest()[:3]
    return f"127.{a}.{b}.{2 + c % 253}"  # never .0, .1 or .255


@dataclass
class FakeNode:
    """A registered node whose kubelet reports its pods Running and Ready (no data plane)."""

    grpc_target: str
    name: str = ""
    identity: str = ""
    internal_ip: str = ""
    vtep_mac: str = ""
    alive: bool = True  # False: no lease renewals and no pod reports, as if it had crashed
    node: pb.Node | None = None
    pod_ips: dict[tuple[str, str], str] = field(default_factory=dict)  # (ns, name) -> IP
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _client: ClusterClient | None = None
    _free: list[str] = field(default_factory=list)

    async def start(self) -> FakeNode:
        self.identity = self.identity or f"fake/{self.name or secrets.token_hex(4)}"
        self.internal_ip = self.internal_ip or fake_internal_ip(self.identity)
        self.vtep_mac = self.vtep_mac or fake_vtep_mac(self.identity)
        self._client = ClusterClient(self.grpc_target)
        reply = await self._register()
        informer = Informer(self._client, ["Pod"], f"fake-node/{self.name}", self._on_pod)
        self._tasks = [
            asyncio.create_task(
                self._renew_loop(reply.renew_interval_s), name=f"lease {self.name}"
            ),
            asyncio.create_task(informer.run(), name=f"pods {self.name}"),
        ]
        await asyncio.wait_for(informer.wait_synced(), START_TIMEOUT_S)
        return self

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.close()

    async def __aenter__(self) -> FakeNode:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _register(self) -> pb.RegisterNodeResponse:
        assert self._client is not None
        reply = await self._client.register_node(
            name=self.name,
            identity=self.identity,
            internal_ip=self.internal_ip,
            vtep_mac=self.vtep_mac,
            labels={"knemu.dev/fake": "true"},
        )
        self.node, self.name = reply.node, reply.node.metadata.name
        network = ipaddress.ip_network(reply.node.pod_cidr) if reply.node.pod_cidr else None
        used = set(self.pod_ips.values())
        # .1 is the node's gateway (DESIGN.md "Address plan"); pods get the rest, lowest first.
        hosts = list(itertools.islice(network.hosts(), 1, MAX_PODS)) if network else []
        self._free = [str(ip) for ip in reversed(hosts) if str(ip) not in used]
        return reply

    async def _renew_loop(self, interval_s: float) -> None:
        assert self._client is not None
        while True:  # the first renewal at once: a registered node is Ready only after it
            if self.alive:
                try:
                    if not await self._client.renew_lease(self.name):
                        await self._register()
                except KnemuError as exc:
                    log.info("fake node %s: lease renewal failed: %s", self.name, exc.message)
            await asyncio.sleep(interval_s)

    async def _on_pod(self, etype: str, kind: str, pod: Any, old: Any | None) -> None:
        if not self.alive:
            return
        if pod.node_name != self.name and (old is None or old.node_name != self.name):
            return
        key = (pod.metadata.namespace, pod.metadata.name)
        if etype == "DELETED" or pod.metadata.deleting:
            ip = self.pod_ips.pop(key, None)
            if ip is not None:
                self._free.append(ip)
            if etype != "DELETED":
                await self._report(pod, "Succeeded", "", ready=False)
            return
        if pod.phase == "Running" and pod.ready and pod.pod_ip == self.pod_ips.get(key):
            return  # already reported
        ip = self.pod_ips.get(key) or self._allocate(key)
        await self._report(pod, "Running" if ip else "Pending", ip, ready=bool(ip))

    def _allocate(self, key: tuple[str, str]) -> str:
        if not self._free:
            return ""  # podCIDR exhausted: the pod stays Pending, as on a real node
        ip = self._free.pop()
        self.pod_ips[key] = ip
        return ip

    async def _report(self, pod: Any, phase: str, ip: str, *, ready: bool) -> None:
        assert self._client is not None
        state = "running" if phase == "Running" else "terminated"
        statuses = [
            pb.ContainerStatus(name=c.name, image=c.image, ready=ready, state=state)
            for c in pod.containers
        ]
        report = pb.PodStatusReport(
            namespace=pod.metadata.namespace,
            name=pod.metadata.name,
            uid=pod.metadata.uid,
            node_name=self.name,
            phase=phase,
            pod_ip=ip,
            ready=ready,
            container_statuses=statuses,
        )
        try:
            await self._client.report_pod_status(report)
        except KnemuError as exc:
            log.info(
                "fake node %s: no report for %s: %s", self.name, pod.metadata.name, exc.message
            )


@dataclass
class FakeCluster:
    grpc_target: str
    nodes: list[FakeNode]

    def node(self, name: str) -> FakeNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no fake node {name!r}; nodes are {[n.name for n in self.nodes]}")


@contextlib.asynccontextmanager
async def fake_cluster(api: Any, nodes: int = 3) -> AsyncIterator[FakeCluster]:
    """``nodes`` FakeNodes (node-1..node-N) registered with ``api``: a gRPC target, or
    anything with a ``grpc_target`` (ApiServerProcess, the in-process ApiServer)."""
    target = api if isinstance(api, str) else str(api.grpc_target)
    cluster = FakeCluster(target, [])
    try:
        for i in range(1, nodes + 1):
            node = FakeNode(target, name=f"node-{i}", identity=f"fake/{secrets.token_hex(4)}")
            cluster.nodes.append(node)
            await node.start()
        yield cluster
    finally:
        for node in reversed(cluster.nodes):
            await node.stop()
