"""The node agent: kubelet + CNI + kube-proxy of one node, wired around the router core.

Start-up (``Agent.start``): register with the api-server (name, identity, underlay IP, VTEP MAC,
VXLAN and kubelet ports) and learn the podCIDR; create the host TUN ``knemu0`` (10.244.N.1);
build the router; open the underlay socket, the DNS forwarder (kube-dns is a node-local service,
docs/INTERFACES.md "Pod DNS"), the NodePort proxy and the kubelet HTTP API; write the CNI
conflist it implements (``cni``); then watch Nodes, Pods, Services and EndpointSlices.  Nodes
become router peers, Services plus EndpointSlices become service rules and NodePort listeners,
Pods bound here are run by the PodRuntime and attached to the router through their TUN fds,
and their hostPorts are published on the node IP (``agent_hostports``).

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
from typing import Any

from knemu.config import AgentConfig
from knemu.errors import ConfigError, KnemuError
from knemu.node_agent import agent_tables as tables, cni
from knemu.node_agent.adapters import TunPort, UnderlayEndpoint
from knemu.node_agent.agent_netpol import POLICY_KINDS, PolicySync
from knemu.node_agent.agent_pods import PodSync
from knemu.node_agent.dnsproxy import DnsForwarder
from knemu.node_agent.faults import Impairments
from knemu.node_agent.flows import FlowLog
from knemu.node_agent.host import HostInterface, host_plan
from knemu.node_agent.kubelet_api import KubeletApi
from knemu.node_agent.mtu import resolve_pod_mtu
from knemu.node_agent.nodeport import NodePortProxy
from knemu.node_agent.router import OUT_HOST, OUT_POD, LocalNode, Output, Router
from knemu.node_agent.tundev import ensure_tun_device
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


class Agent:
    """One node's agent; ``async with Agent(config) as agent`` runs it until the block ends."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.underlay_ip = config.underlay_ip or default_underlay_ip(config.apiserver)
        self.identity = config.identity or socket.gethostname()
        self.client = ClusterClient(config.apiserver)
        self.flows = FlowLog()
        self.faults = Impairments(seed=config.seed)
        self.name = config.node_name
        self.router: Router
        self.host: HostInterface | None = None
        self.host_port: TunPort | None = None
        self.underlay: UnderlayEndpoint | None = None
        self.dns: DnsForwarder | None = None
        self.nodeports: NodePortProxy | None = None
        self.cni: cni.CniConfig | None = None
        self.pods: PodSync
        self.policy: PolicySync | None = None  # None: NetworkPolicy not enforced (flannel-like)
        self.informer: Informer | None = None
        self.api: KubeletApi | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._nodeport_dirty = asyncio.Event()
        self._peer_names: dict[str, str] = {}  # underlay IP -> node name, for per-peer faults
        # (namespace, service) -> {slice name: slice}: a service's slices without scanning
        # every slice of the cluster on each event (10,000 services would make that O(n^2)).
        self._slices: dict[tuple[str, str], dict[str, pb.EndpointSlice]] = {}

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
        ensure_tun_device()  # a Swarm task has none mapped (node_agent/tundev.py)
        node = await self._register()
        self.name = node.metadata.name
        mtu = await resolve_pod_mtu(self.config.pod_mtu_bytes, self.underlay_ip)
        log.info("pod MTU %d: %s", mtu.mtu_bytes, mtu.reason)
        self.config = self.config.replace(pod_mtu_bytes=mtu.mtu_bytes)
        plan = host_plan(node.pod_cidr, mtu_bytes=self.config.pod_mtu_bytes)
        local = LocalNode(
            name=self.name, underlay_ip=self.underlay_ip, vtep_mac=self.vtep_mac,
            pod_cidr=node.pod_cidr, gateway_ip=plan.address, vni=self.config.vni,
            vxlan_port=self.config.vxlan_port, mtu=self.config.pod_mtu_bytes,
        )  # fmt: skip
        self.router = Router(local, self.config.proxy_mode, self.config.ipvs_scheduler,
                             self.config.seed, flow_sink=self.flows.append)  # fmt: skip
        self.router.set_forward_events(False)  # until `knemu flows -f` or a trace watches
        self.flows.on_watch = self.router.set_forward_events
        self.host = await HostInterface.create(plan)
        self.host_port = TunPort(self.host.fd, self._from_host, name=plan.ifname)
        self.host_port.start()
        self.underlay = UnderlayEndpoint(self._from_underlay, self.faults, self._peer_name)
        await self.underlay.open((self.underlay_ip, self.config.vxlan_port))
        self.dns = DnsForwarder(f"{plan.address}:53", self.config.dns_upstream)
        await self.dns.start()
        entry, backends = tables.dns_service(plan.address)
        self.router.set_service(entry.key, entry, backends)
        self.nodeports = NodePortProxy(self.underlay_ip)
        if self.config.network_policy:
            self.policy = PolicySync(self.router, self.name, plan.address)
        self.pods = PodSync(self, plan.address)
        self.cni = cni.install(self.config, self.name, node.pod_cidr, plan.address)
        self.api = KubeletApi(self)
        await self.api.start(self.underlay_ip, self.config.kubelet_listen_port)
        kinds = WATCHED_KINDS + (POLICY_KINDS if self.policy is not None else ())
        self.informer = Informer(
            self.client, kinds, f"agent/{self.name}", self._on_watch,
            self.pods.on_synced, seed=self.config.seed,
        )  # fmt: skip
        self._spawn("informer", self.informer.run)
        self._spawn("lease", self._renew_leases)
        self._spawn("timers", self._run_timers)
        self._spawn("nodeports", self._sync_nodeports)
        self._spawn("hostports", lambda: self.pods.hostports.run(self.underlay_ip))
        self._spawn("reports", self.pods.run_reporters)
        log.info("node %s up: podCIDR %s, underlay %s", self.name, node.pod_cidr, self.underlay_ip)
        self.pods.record("Node", "", self.name, "Normal", "Starting",
                         f"Started knemu agent: podCIDR {node.pod_cidr}, gateway {plan.address}, "
                         f"proxy mode {self.config.proxy_mode}")  # fmt: skip

    async def stop(self) -> None:
        """Drain: stop pods first (their traffic needs the router), then close everything."""
        for name in ("informer", "lease"):
            await self._cancel(name)
        if hasattr(self, "pods"):
            with contextlib.suppress(Exception):
                await self.pods.stop_all()
        for name in list(self._tasks):
            await self._cancel(name)
        if hasattr(self, "pods"):
            await self.pods.hostports.close()
        if self.api is not None:
            await self.api.stop()
        for closer in (self.nodeports, self.dns):
            if closer is not None:
                await closer.close()
        if self.underlay is not None:
            self.underlay.close()
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

    async def _register(self) -> pb.Node:
        """Register, retrying with backoff while the api-server is unreachable."""
        backoff = Backoff(0.1, 3.0, self.config.seed)
        while True:
            try:
                reply = await self.client.register_node(
                    name=self.name, identity=self.identity, internal_ip=self.underlay_ip,
                    vtep_mac=self.vtep_mac, vxlan_port=self.config.vxlan_port,
                    kubelet_port=self.config.kubelet_listen_port,
                )  # fmt: skip
            except KnemuError as exc:
                # Loud on the first failure, then every tenth, while the api-server is away.
                level = logging.WARNING if backoff.failures % 10 == 0 else logging.DEBUG
                log.log(level, "registration failed (%s); retrying", exc.message)
                await asyncio.sleep(backoff.next_delay_s())
                continue
            if not reply.node.pod_cidr:
                raise ConfigError(f"api-server gave node {reply.node.metadata.name} no podCIDR")
            self.renew_interval_s = reply.renew_interval_s or 1.0
            return reply.node

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
        node = await self._register()
        running = self.router.node.pod_cidr
        if node.pod_cidr != running:
            log.error("node %s got podCIDR %s after registering again but runs %s; "
                      "restart the agent", self.name, node.pod_cidr, running)  # fmt: skip

    # -- the data plane ----------------------------------------------------------------------

    def dispatch(self, out: Output | None) -> None:
        if out is None:
            return
        kind, target, data = out
        if kind == OUT_POD:
            port = self.pods.ports.get(target)
            if port is not None:
                port.write(data)
        elif kind == OUT_HOST:
            if self.host_port is not None:
                self.host_port.write(data)
        elif self.underlay is not None:
            self.underlay.send(data, target)

    def _from_host(self, packet: bytes, now: float) -> None:
        self.dispatch(self.router.handle_host(packet, now))

    def _from_underlay(self, data: bytes, src: tuple[str, int], now: float) -> None:
        self.dispatch(self.router.handle_underlay(data, src, now))

    def from_pod(self, key: str) -> Callable[[bytes, float], None]:
        def feed(packet: bytes, now: float) -> None:
            self.dispatch(self.router.handle_pod(key, packet, now))

        return feed

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
        if kind == "Node":
            self._apply_node(type_, obj)
        elif kind == "Service":
            self._apply_service(obj.metadata.namespace, obj.metadata.name)
        elif kind == "EndpointSlice":
            self._index_slice(type_, obj, old)
            if old is not None and old.service_name != obj.service_name:
                self._apply_service(old.metadata.namespace, old.service_name)
            self._apply_service(obj.metadata.namespace, obj.service_name)
        elif kind == "Pod":
            self.pods.kick(f"{obj.metadata.namespace}/{obj.metadata.name}")

    def _index_slice(self, type_: str, obj: pb.EndpointSlice, old: pb.EndpointSlice | None) -> None:
        name = obj.metadata.name
        for s in (old, obj):
            if s is not None:
                group = self._slices.get((s.metadata.namespace, s.service_name))
                if group is not None:
                    group.pop(name, None)
                    if not group:
                        del self._slices[(s.metadata.namespace, s.service_name)]
        if type_ != "DELETED":
            self._slices.setdefault((obj.metadata.namespace, obj.service_name), {})[name] = obj

    def _peer_name(self, ip: str) -> str:
        return self._peer_names.get(ip, ip)

    def _apply_node(self, type_: str, node: pb.Node) -> None:
        peer = tables.peer_of(node, self.name)
        if type_ == "DELETED" or peer is None:
            if node.metadata.name != self.name:
                self.router.remove_peer(node.metadata.name)
                self._peer_names.pop(node.internal_ip, None)
            return
        self._peer_names[peer.underlay_ip] = peer.name
        try:
            self.router.set_peer(peer.name, peer.pod_cidr, peer.underlay_ip, peer.vtep_mac,
                                 peer.vxlan_port, peer.ready)  # fmt: skip
        except ConfigError as exc:
            log.warning("ignoring node %s: %s", peer.name, exc.message)

    def _apply_service(self, namespace: str, name: str) -> None:
        assert self.informer is not None
        key = tables.service_key(namespace, name)
        svc = self.informer.get("Service", namespace, name)
        self._nodeport_dirty.set()
        if svc is not None and tables.is_agent_owned(svc):
            return  # kube-dns stays the node-local forwarder
        if svc is None or not tables.is_proxied(svc):
            self.router.remove_service(key)
            return
        entry = tables.service_entry(svc)
        slices = list(self._slices.get((namespace, name), {}).values())
        try:
            self.router.set_service(key, entry, tables.backends_of(entry, slices))
        except ConfigError as exc:
            log.warning("service %s not proxied: %s", key, exc.message)
            self.router.remove_service(key)

    async def _sync_nodeports(self) -> None:
        assert self.informer is not None and self.nodeports is not None
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
    agent = Agent(config)
    starting = asyncio.create_task(agent.start(), name="agent-start")
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
        await agent.stop()


def run(config: AgentConfig) -> int:
    """Entry point of ``knemu agent``: 0 after a clean drain, the error's exit code otherwise."""
    try:
        asyncio.run(run_agent(config))
    except KnemuError as exc:
        log.error("agent failed: %s", exc.message)
        return exc.exit_code
    return 0
