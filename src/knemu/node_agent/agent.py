"""The node agent: kubelet + CNI + kube-proxy of one node, wired around the router core.

Start-up (``run_agent``): make ``/dev/net/tun`` when the node has none (``dataplane.tundev``: a
Docker Swarm task cannot map devices), settle the pod MTU (the underlay link's minus VXLAN's 50
bytes unless set: ``dataplane.mtu``), ``register`` with the api-server (name, identity, underlay
IP, VTEP MAC, VXLAN and kubelet ports) and learn the podCIDR; ``Agent(...)`` then builds every
part (the router, NodeTables, PolicySync, the informer, PodSync, the NodePort proxy, the kubelet
API); ``Agent.start`` creates the host TUN ``knemu0`` (10.244.N.1), opens the underlay socket,
the DNS forwarder (kube-dns is a node-local service, docs/INTERFACES.md "Pod DNS") and the
kubelet HTTP API, writes the CNI conflist it implements (``cni.conflist``), then watches Nodes,
Pods, Services and EndpointSlices.
Nodes become router peers, Services plus EndpointSlices become service rules and NodePort listeners,
Pods bound here are run by the PodRuntime and attached to the router through their TUN fds,
and their hostPorts are published on the node IP (``cni.hostports``).  ``NodeTables``
(``dataplane.tables``) turns the watched objects into router calls; the kubelet parts
(``kubelet``) get the few collaborators they use, never this object.

While the api-server is away the data plane keeps forwarding with the last tables: the
informer reconnects on its own, lease renewals and status reports are retried.  SIGTERM drains:
pods are stopped (their links vanish with their namespaces), then the host TUN and sockets are
closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knemu.config import BACKEND_LABEL, AgentConfig
from knemu.errors import ConfigError, KnemuError
from knemu.node_agent.cni import conflist as cni
from knemu.node_agent.dataplane import backends, tables
from knemu.node_agent.dataplane.adapters import PortStatistics, TunPort, UnderlayEndpoint
from knemu.node_agent.dataplane.backends import bird
from knemu.node_agent.dataplane.batching import route_underlay_batch
from knemu.node_agent.dataplane.bgp_speaker import BgpSpeaker
from knemu.node_agent.dataplane.faults import Impairments
from knemu.node_agent.dataplane.flows import FlowLog
from knemu.node_agent.dataplane.host import HostInterface, host_plan
from knemu.node_agent.dataplane.offload import cut
from knemu.node_agent.dataplane.offload_port import OffloadTunPort
from knemu.node_agent.dataplane.router import OUT_HOST, OUT_POD, LocalNode, Output, Router
from knemu.node_agent.dataplane.tables import NodeTables
from knemu.node_agent.dataplane.tundev import ensure_tun_device
from knemu.node_agent.dataplane.underlay import resolve_pod_mtu, send_as_vtep
from knemu.node_agent.kubelet import metrics
from knemu.node_agent.kubelet.api import KubeletApi
from knemu.node_agent.kubelet.capture import CaptureTaps
from knemu.node_agent.kubelet.pod_sync import PodSync
from knemu.node_agent.kubeproxy.dns_proxy import DnsForwarder
from knemu.node_agent.kubeproxy.nodeport import NodePortProxy
from knemu.node_agent.kubeproxy.relays import ProxyStatistics
from knemu.node_agent.policy.sync import POLICY_KINDS, PolicySync
from knemu.proto import knemu_pb2 as pb
from knemu.proto.client import Backoff, ClusterClient, Informer

log = logging.getLogger(__name__)

WATCHED_KINDS = ("Node", "Pod", "Service", "EndpointSlice")
MAX_TIMER_S = 1.0  # the router's expiry timer runs at least this often
RESTART_DELAY_S = 1.0  # before restarting an agent loop that failed


def default_underlay_ip(apiserver: str = "") -> str:
    """The source address of the default route, else of the route to the api-server (HOST:PORT):
    an internal network such as a Swarm overlay has no default route.  connect() on UDP sends
    nothing; it only looks the route up."""
    host = apiserver.rpartition(":")[0].strip("[]")
    targets = [("192.0.2.1", 9)] + ([(host, 9)] if host else [])  # TEST-NET-1 (RFC 5737)
    errors = []
    for target in targets:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.connect(target)
            except OSError as exc:
                errors.append(f"{target[0]}: {exc}")
                continue
            return str(s.getsockname()[0])
    raise ConfigError(
        f"no route to take the underlay IP from ({'; '.join(errors)}); set underlay_ip"
    )


class PodLinks:
    """Plugs a running pod into the data plane (``kubelet.pod_sync.PodNetwork``): its packets
    go to the router, the router delivers to its IP, NetworkPolicy polices it from the first
    packet."""

    def __init__(
        self,
        router: Router,
        policy: PolicySync | None,
        send: Callable[[Output | None, int], None],
    ) -> None:
        self.router = router
        self.policy = policy
        self.send = send

    def receiver(self, key: str) -> Callable[[bytes, int, float], None]:
        router, send = self.router, self.send

        def feed(packet: bytes, gso_size: int, now: float) -> None:
            send(router.handle_pod(key, packet, now, gso_size), gso_size)

        return feed

    def plug(self, key: str, ip: str) -> None:
        self.router.add_local_pod(ip, key)
        if self.policy is not None:
            self.policy.set_local_pod(key, ip)

    def unplug(self, key: str, ip: str) -> None:
        self.router.remove_local_pod(ip)
        if self.policy is not None:
            self.policy.set_local_pod(key, None)


@dataclass(frozen=True)
class Registration:
    """What the api-server gave this node when it registered."""

    node: pb.Node  # its name and podCIDR
    underlay_ip: str
    identity: str
    renew_interval_s: float


async def register(
    config: AgentConfig, client: ClusterClient, underlay_ip: str, identity: str
) -> Registration:
    """Register, retrying with backoff while the api-server is unreachable."""
    backoff = Backoff(0.1, 3.0, config.seed)
    mac = tables.vtep_mac(identity, underlay_ip)
    while True:
        try:
            reply = await client.register_node(
                name=config.node_name, identity=identity, internal_ip=underlay_ip,
                vtep_mac=mac, vxlan_port=config.vxlan_port,
                kubelet_port=config.kubelet_listen_port,
                labels={BACKEND_LABEL: config.backend},
            )  # fmt: skip
        except KnemuError as exc:
            # Loud on the first failure, then every tenth, while the api-server is away.
            level = logging.WARNING if backoff.failures % 10 == 0 else logging.DEBUG
            log.log(level, "registration failed (%s); retrying", exc.message)
            await asyncio.sleep(backoff.next_delay_s())
            continue
        if not reply.node.pod_cidr:
            raise ConfigError(f"api-server gave node {reply.node.metadata.name} no podCIDR")
        return Registration(reply.node, underlay_ip, identity, reply.renew_interval_s or 1.0)


class Agent:
    """One registered node's agent, whole once built: ``async with Agent(config, client,
    registration) as agent`` opens its devices and sockets and runs it until the block ends
    (``run_agent`` registers first)."""

    def __init__(self, config: AgentConfig, client: ClusterClient, reg: Registration) -> None:
        self.config = config
        self.client = client
        self.name = reg.node.metadata.name
        self.underlay_ip = reg.underlay_ip
        self.identity = reg.identity
        self.renew_interval_s = reg.renew_interval_s
        pod_cidr = reg.node.pod_cidr
        mtu = config.pod_mtu_or_default  # run_agent has settled it from the underlay
        self.plan = plan = host_plan(pod_cidr, mtu_bytes=mtu)
        self.flows = FlowLog()
        self.faults = Impairments(seed=config.seed)
        local = LocalNode(
            name=self.name, underlay_ip=self.underlay_ip, vtep_mac=self.vtep_mac,
            pod_cidr=pod_cidr, gateway_ip=plan.address, vni=config.vni,
            vxlan_port=config.vxlan_port, mtu=mtu, backend=config.backend,
            vxlan_source_ports=config.vxlan_source_port_range, vxlan_df=config.vxlan_df,
        )  # fmt: skip
        self.router = Router(local, config.proxy_mode, config.ipvs_scheduler, config.seed,
                             flow_sink=self.flows.append)  # fmt: skip
        self.router.set_forward_events(False)  # until `knemu flows -f` or a trace watches
        self.flows.on_watch = self.router.set_forward_events
        entry, backends = tables.dns_service(plan.address)
        self.router.set_service(entry.key, entry, backends)
        # None: NetworkPolicy not enforced (flannel-like)
        self.policy = (
            PolicySync(self.router, self.name, plan.address, self.router.conntrack.timeouts)
            if config.network_policy
            else None
        )
        kinds = WATCHED_KINDS + (POLICY_KINDS if self.policy is not None else ())
        self.informer = Informer(
            client, kinds, f"agent/{self.name}", self._on_watch, self._on_synced,
            seed=config.seed,
        )  # fmt: skip
        # backend bgp: BIRD on this node, peers from the Node objects (the mesh)
        self.bgp: BgpSpeaker | None = None
        if config.backend == "bgp":
            bgp = bird.BgpConfig(self.name, self.underlay_ip, pod_cidr, ())
            self.bgp = BgpSpeaker(bgp, Path(config.state_dir) / "bgp")
        self.tables = NodeTables(self.name, self.router, self.informer, config.backend,
                                 self._backend_mismatch,
                                 self.bgp.set_peers if self.bgp else None)  # fmt: skip
        self.pods = PodSync(
            config, self.name, pod_cidr, plan.address, self.underlay_ip, self.informer, client,
            PodLinks(self.router, self.policy, self.dispatch),
        )  # fmt: skip
        self.nodeports = NodePortProxy(self.underlay_ip)
        self.api = KubeletApi(
            self.name, self.pods, self.flows, self.faults, table=self.table_snapshot,
            metrics=self.metrics_text, cni=lambda: self.cni, inject=self.inject_from_pod,
            captures=CaptureTaps(lambda: self.underlay, self.pods.ports),
        )  # fmt: skip
        # Opened by start(), closed by stop():
        self.cni: cni.CniConfig | None = None
        self.host: HostInterface | None = None
        self.host_port: TunPort | None = None
        self.underlay: UnderlayEndpoint | None = None
        self.dns: DnsForwarder | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._nodeport_dirty = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Agent:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open the host TUN, the underlay socket, the DNS forwarder and the kubelet API, write
        the CNI conflist, then start the loops."""
        plan, pods = self.plan, self.pods
        self.host = await HostInterface.create(plan)
        self.host_port = TunPort(self.host.fd, self._from_host, name=plan.ifname)
        self.host_port.start()
        gro = self._from_underlay_batch if self.config.tun_offload else None
        self.underlay = UnderlayEndpoint(self._from_underlay, self.faults, self._peer_name,
                                         on_batch=gro)  # fmt: skip
        backend = self.router.backend
        if backend.transport != backends.TRANSPORT_NONE:
            raw = backend.port if backend.transport == backends.TRANSPORT_IP else 0
            await self.underlay.open((self.underlay_ip, self.config.vxlan_port), raw)
        if isinstance(backend, backends.VxlanBackend):
            send_as_vtep(self.underlay, backend, self.config.vxlan_port)
        if self.bgp is not None:
            await self.bgp.start()
        self.dns = DnsForwarder(f"{plan.address}:53", self.config.dns_upstream)
        await self.dns.start()
        pod_cidr = self.router.node.pod_cidr
        self.cni = cni.install(self.config, self.name, pod_cidr, plan.address)
        await self.api.start(self.underlay_ip, self.config.kubelet_listen_port)
        self._spawn("informer", self.informer.run)
        self._spawn("lease", self._renew_leases)
        self._spawn("timers", self._run_timers)
        self._spawn("nodeports", self._sync_nodeports)
        self._spawn("hostports", lambda: pods.hostports.run(self.underlay_ip))
        self._spawn("reports", pods.run_reporters)
        log.info("node %s up: podCIDR %s, underlay %s", self.name, pod_cidr, self.underlay_ip)
        pods.record("Node", "", self.name, "Normal", "Starting",
                    f"Started knemu agent: podCIDR {pod_cidr}, gateway {plan.address}, "
                    f"proxy mode {self.config.proxy_mode}, "
                    f"network backend {self.config.backend}")  # fmt: skip

    async def stop(self) -> None:
        """Drain: stop pods first (their traffic needs the router), then close everything."""
        for name in ("informer", "lease"):
            await self._cancel(name)
        with contextlib.suppress(Exception):
            await self.pods.stop_all()
        for name in list(self._tasks):
            await self._cancel(name)
        await self.pods.hostports.close()
        await self.api.stop()
        await self.nodeports.close()
        if self.dns is not None:
            await self.dns.close()
        if self.underlay is not None:
            self.underlay.close()
        if self.bgp is not None:
            await self.bgp.stop()
        if self.host_port is not None:
            self.host_port.close()
        if self.host is not None:
            self.host.close()
            self.host = None
        await self.client.close()

    def _spawn(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        """Run a loop of the agent; a bug in it is logged and the loop restarted, so one
        failure cannot silently stop lease renewals or status reports."""

        async def guarded() -> None:
            while True:
                try:
                    await factory()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("agent loop %s failed; restarting it", name)
                    await asyncio.sleep(RESTART_DELAY_S)

        self._tasks[name] = asyncio.create_task(guarded(), name=f"agent-{name}")

    async def _cancel(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- the api-server link -----------------------------------------------------------------

    @property
    def vtep_mac(self) -> str:
        return tables.vtep_mac(self.identity, self.underlay_ip)

    async def _renew_leases(self) -> None:
        """Renew every renew_interval_s; a server that forgot us gets a fresh registration.
        Failures are logged when they start and when they end, not once a second."""
        failing = False
        while True:
            # The first renewal comes at once: a registered node is NotReady until its agent,
            # fully up, renews (as the kubelet posts NodeReady once its runtime works).
            try:
                if not await self.client.renew_lease(self.name):
                    log.warning("api-server does not know node %s; registering again", self.name)
                    await self._reregister()
            except KnemuError as exc:
                if not failing:
                    log.warning("lease renewal failed (%s); forwarding with the last tables "
                                "and retrying", exc.message)  # fmt: skip
                failing = True
            else:
                if failing:
                    log.warning("lease renewal works again")
                failing = False
            await asyncio.sleep(self.renew_interval_s)

    async def _reregister(self) -> None:
        reg = await register(self.config, self.client, self.underlay_ip, self.identity)
        self.renew_interval_s = reg.renew_interval_s
        node = reg.node
        running = self.router.node.pod_cidr
        if node.pod_cidr != running:
            log.error("node %s got podCIDR %s after registering again but runs %s; "
                      "restart the agent", self.name, node.pod_cidr, running)  # fmt: skip

    # -- the data plane ----------------------------------------------------------------------

    def dispatch(self, out: Output | None, gso_size: int = 0) -> None:
        """Send a router output; with ``gso_size`` it may be a TCP super-packet, written whole
        to a pod (TUN offload) and cut into segments for the host TUN and the underlay."""
        if out is None:
            return
        kind, target, data = out
        if kind is OUT_POD:
            port = self.pods.ports.get(target)
            if port is not None:
                if gso_size and isinstance(port, OffloadTunPort):
                    port.write_super(data, gso_size)
                else:
                    for frame in cut(data, 0, gso_size) if gso_size else (data,):
                        port.write(frame)
        elif kind is OUT_HOST:
            if self.host_port is not None:
                for frame in cut(data, 0, gso_size) if gso_size else (data,):
                    self.host_port.write(frame)
        elif self.underlay is not None:
            if gso_size:
                for frame in cut(data, self.router.headroom_bytes, gso_size):
                    self.underlay.send(frame, target)
            else:
                self.underlay.send(data, target)

    def _from_host(self, packet: bytes, now: float) -> None:
        self.dispatch(self.router.handle_host(packet, now))

    def _from_underlay(self, data: bytes, src: tuple[str, int], now: float) -> None:
        self.dispatch(self.router.handle_underlay(data, src, now))

    def _from_underlay_batch(self, batch: list[tuple[bytes, tuple[str, int]]], now: float) -> None:
        for out, gso_size in route_underlay_batch(self.router, batch, now):
            self.dispatch(out, gso_size)

    def inject_from_pod(self, key: str, packet: bytes, now: float) -> None:
        """A packet as if pod ``key`` had sent it (``knemu trace`` probes)."""
        self.dispatch(self.router.handle_pod(key, packet, now))

    async def _run_timers(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            self.router.expire(now)
            nxt = self.router.next_timer()
            delay = MAX_TIMER_S if nxt is None else min(max(nxt - now, 0.01), MAX_TIMER_S)
            await asyncio.sleep(delay)

    # -- watched objects -> tables ----------------------------------------------------------

    async def _on_watch(self, type_: str, kind: str, obj: Any, old: Any | None) -> None:
        if self.policy is not None:
            self.policy.on_watch(type_, kind, obj)  # NetworkPolicy, Namespace, Pod
        if self.tables.apply(type_, kind, obj, old):
            self._nodeport_dirty.set()
        if kind == "Pod":
            self.pods.kick(f"{obj.metadata.namespace}/{obj.metadata.name}")

    async def _on_synced(self) -> None:
        await self.pods.on_synced()

    def _peer_name(self, ip: str) -> str:
        return self.tables.peer_name(ip)

    # -- what the kubelet API serves ---------------------------------------------------------

    def _backend_mismatch(self, peer: str, backend: str) -> None:
        """A peer speaks another pod network backend: say so where `knemu describe` shows."""
        self.pods.record("Node", "", self.name, "Warning", "NetworkBackendMismatch",
                         f"node {peer} uses network backend {backend}, this node "
                         f"{self.config.backend}: no route to its pods; run every node with "
                         f"the same --backend")  # fmt: skip

    def table_snapshot(self) -> dict[str, Any]:
        """``GET /table``: the router's tables and what else shapes this node's forwarding."""
        snap = self.router.table_snapshot()
        snap["node"] = self.name
        snap["backend"] = self.config.backend
        snap["backend_mismatch"] = dict(self.tables.mismatched)
        if self.bgp is not None:
            snap["bgp"] = self.bgp.status
        snap["impairments"] = self.faults.describe()
        policy = self.policy  # None: this node does not enforce
        snap["network_policy"] = {"enforced": False} if policy is None else policy.snapshot()
        snap["host_ports"] = self.pods.hostports.table.snapshot()
        return snap

    def metrics_text(self) -> str:
        """``GET /metrics``: every part's counters."""
        ports: dict[str, PortStatistics] = {
            name: port.stats for name, port in self.pods.ports.items()
        }
        if self.host_port is not None:
            ports["host"] = self.host_port.stats
        if self.underlay is not None:
            ports["underlay"] = self.underlay.stats
        proxies: dict[str, ProxyStatistics] = {
            "nodeport": self.nodeports.stats,
            "hostport": self.pods.hostports.stats,
        }
        return metrics.render(
            self.name, self.router.statistics(), len(self.pods.handles), ports,
            self.faults.statistics(), self.flows.statistics(),
            None if self.dns is None else self.dns.relay.stats, proxies,
            self.pods.events_dropped,
        )  # fmt: skip

    async def _sync_nodeports(self) -> None:
        while True:
            await self._nodeport_dirty.wait()
            self._nodeport_dirty.clear()
            await self.nodeports.apply(tables.node_port_rules(self.informer.list("Service")))


async def run_agent(config: AgentConfig, stop: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or ``stop`` is set), then drain.  A signal that arrives
    while the agent is still starting (waiting for the api-server) ends the start-up too."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    underlay_ip = config.underlay_ip or default_underlay_ip(config.apiserver)
    ensure_tun_device()  # a Swarm task has none mapped (dataplane/tundev.py)
    mtu = await resolve_pod_mtu(
        config.pod_mtu_bytes, underlay_ip, backends.overhead_bytes(config.backend), config.backend
    )
    log.info("pod MTU %d: %s", mtu.mtu_bytes, mtu.reason)
    config = config.replace(pod_mtu_bytes=mtu.mtu_bytes)  # every part is built with it
    identity = config.identity or socket.gethostname()
    client = ClusterClient(config.apiserver)
    agent: Agent | None = None

    async def bring_up() -> None:
        nonlocal agent
        reg = await register(config, client, underlay_ip, identity)
        agent = Agent(config, client, reg)
        await agent.start()

    starting = asyncio.create_task(bring_up(), name="agent-start")
    stopping = asyncio.create_task(stop.wait(), name="agent-stop-signal")
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # a failed start-up raises here
            await stopping
            log.info("draining: stopping pods and removing links")
    finally:
        for task in (starting, stopping):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if agent is not None:
            await agent.stop()  # closes the client too
        else:
            await client.close()


def run(config: AgentConfig) -> int:
    """Entry point of ``knemu agent``: 0 after a clean drain, the error's exit code otherwise."""
    try:
        asyncio.run(run_agent(config))
    except KnemuError as exc:
        log.error("agent failed: %s", exc.message)
        return exc.exit_code
    return 0
