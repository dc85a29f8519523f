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
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knemu.config import BACKEND_LABEL, CLUSTER_CIDR, AgentConfig
from knemu.errors import ConfigError, KnemuError
from knemu.node_agent.cni import conflist as cni
from knemu.node_agent.dataplane import backends, tables
from knemu.node_agent.dataplane.adapters import TunPort, UnderlayEndpoint
from knemu.node_agent.dataplane.backends import bird
from knemu.node_agent.dataplane.bgp_speaker import BgpSpeaker
from knemu.node_agent.dataplane.egress import ControlPlaneMasquerade
from knemu.node_agent.dataplane.faults import Impairments
from knemu.node_agent.dataplane.flows import FlowLog
from knemu.node_agent.dataplane.host import HostInterface, host_plan
from knemu.node_agent.dataplane.kernel_faults import KernelPartitions
from knemu.node_agent.dataplane.router import OUT_HOST, OUT_POD, LocalNode, Output, Router
from knemu.node_agent.dataplane.steering import Steering
from knemu.node_agent.dataplane.tables import NodeTables
from knemu.node_agent.dataplane.tundev import ensure_tun_device
from knemu.node_agent.dataplane.underlay import resolve_pod_mtu, send_as_vtep
from knemu.node_agent.kubelet import metrics
from knemu.node_agent.kubelet.api import KubeletApi
from knemu.node_agent.kubelet.capture import CaptureTaps
from knemu.node_agent.kubelet.pod_sync import PodSync
from knemu.node_agent.kubeproxy import l2announce
from knemu.node_agent.kubeproxy.dns_proxy import DnsForwarder
from knemu.node_agent.kubeproxy.healthcheck_server import HealthCheckServers
from knemu.node_agent.kubeproxy.nodeport import NodePortProxy
from knemu.node_agent.kubeproxy.relays import ProxyStatistics
from knemu.node_agent.policy.sync import POLICY_KINDS, PolicySync
from knemu.proto import knemu_pb2 as pb
from knemu.proto.client import Backoff, ClusterClient, Informer

log = logging.getLogger(__name__)

WATCHED_KINDS = ("Node", "Pod", "Service", "EndpointSlice")
MAX_TIMER_S = 1.0  # the router's expiry timer runs at least this often
RENEWALS_IN_FLIGHT = 16  # renewals sent before the oldest is answered (each times out in 10 s)
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
        self, router: Router, policy: PolicySync | None, send: Callable[[Output | None], None]
    ) -> None:
        self.router = router
        self.policy = policy
        self.send = send

    def receiver(self, key: str) -> Callable[[bytes, float], None]:
        router, send = self.router, self.send

        def feed(packet: bytes, now: float) -> None:
            send(router.handle_pod(key, packet, now))

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
    config: AgentConfig,
    client: ClusterClient,
    underlay_ip: str,
    identity: str,
    keys: backends.KeyPair | None = None,
) -> Registration:
    """Register, retrying with backoff while the api-server is unreachable; ``keys``: the
    node's WireGuard key pair, whose public half the Node publishes."""
    backoff = Backoff(0.1, 3.0, config.seed)
    mac = tables.vtep_mac(identity, underlay_ip)
    while True:
        try:
            reply = await client.register_node(
                name=config.node_name, identity=identity, internal_ip=underlay_ip,
                vtep_mac=mac, vxlan_port=config.vxlan_port,
                kubelet_port=config.kubelet_listen_port,
                labels={BACKEND_LABEL: config.backend},
                wireguard_public_key=keys.public_b64 if keys is not None else "",
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

    def __init__(
        self,
        config: AgentConfig,
        client: ClusterClient,
        reg: Registration,
        keys: backends.KeyPair | None = None,
    ) -> None:
        self.config = config
        self.keys = keys  # --encryption wireguard: this run's key pair (fresh at every start)
        self.client = client
        # Heartbeats on a connection of their own: behind the watch stream's flood of events
        # during a rollout, they were read seconds late and healthy nodes were declared lost.
        self.lease_client = ClusterClient(client.target)
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
            encryption=config.encryption,
        )  # fmt: skip
        self.router = Router(local, config.proxy_mode, config.ipvs_scheduler, config.seed,
                             flow_sink=self.flows.append, keys=keys)  # fmt: skip
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
        self.kernel_faults: KernelPartitions | None = None
        if config.backend == "bgp":
            self.kernel_faults = KernelPartitions(self.faults, self._peer_addresses)
            self.faults.on_change = self.kernel_faults.changed
            external = bird.parse_external_peers(config.bgp_peers)
            bgp = bird.BgpConfig(self.name, self.underlay_ip, pod_cidr, (), external_peers=external,
                                 bfd_interval_ms=config.bgp_bfd_ms)  # fmt: skip
            self.bgp = BgpSpeaker(bgp, Path(config.state_dir) / "bgp",
                                  reflector_nodes=config.route_reflector_nodes)  # fmt: skip
        self.tables = NodeTables(self.name, self.router, self.informer, config.backend,
                                 self._backend_mismatch,
                                 self._set_bgp_peers if self.bgp else None)  # fmt: skip
        self.pods = PodSync(
            config, self.name, pod_cidr, plan.address, self.underlay_ip, self.informer, client,
            PodLinks(self.router, self.policy, self.dispatch),
        )  # fmt: skip
        self.nodeports = NodePortProxy(self.underlay_ip)
        # externalTrafficPolicy Local: kube-proxy's healthcheck ports and the steering rules
        # that bring the original packets to the router (dataplane/steering.py).
        self.healthchecks = HealthCheckServers(
            self.underlay_ip, self.router.services.local_endpoints
        )
        self.steering = Steering(self.underlay_ip, plan.ifname)
        # pods reach the api-server (the kubernetes Service) through the node's NAT
        apiserver_host = config.apiserver.rsplit(":", 1)[0].strip("[]")
        self.egress = ControlPlaneMasquerade(CLUSTER_CIDR, apiserver_host)
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
        self.applied: dict[str, dict[str, float]] = {}  # kind/ns/name -> rv, wall time applied
        self._renewal_failing = False
        self._registering = False

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
        self.underlay = UnderlayEndpoint(self._from_underlay, self.faults, self._peer_name)
        backend = self.router.backend
        if backend.transport != backends.TRANSPORT_NONE:
            raw = backend.port if backend.transport == backends.TRANSPORT_IP else 0
            await self.underlay.open((self.underlay_ip, backend.port if not raw else 0), raw)
        if isinstance(backend, backends.VxlanBackend):
            send_as_vtep(self.underlay, backend, self.config.vxlan_port)
        if self.bgp is not None:
            await self.bgp.start()
        if self.kernel_faults is not None:
            self._spawn("kernel-faults", self.kernel_faults.run)
        self.dns = DnsForwarder(f"{plan.address}:53", self.config.dns_upstream)
        await self.dns.start()
        pod_cidr = self.router.node.pod_cidr
        self.cni = cni.install(self.config, self.name, pod_cidr, plan.address)
        await self.api.start(self.underlay_ip, self.config.kubelet_listen_port)
        await self.steering.start()
        await self.egress.start()
        self._spawn("informer", self.informer.run)
        self._spawn("lease", self._renew_leases)
        self._spawn("timers", self._run_timers)
        self._spawn("nodeports", self._sync_nodeports)
        self._spawn("hostports", lambda: pods.hostports.run(self.underlay_ip))
        self._spawn("reports", pods.run_reporters)
        self._spawn("pod sources", pods.run_source_refresh)
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
        await self.healthchecks.close()
        await self.steering.close()
        await self.egress.close()
        if self.dns is not None:
            await self.dns.close()
        if self.underlay is not None:
            self.underlay.close()
        if self.bgp is not None:
            await self.bgp.stop()
        if self.kernel_faults is not None:
            await self.kernel_faults.close()
        if self.host_port is not None:
            self.host_port.close()
        if self.host is not None:
            self.host.close()
            self.host = None
        await self.client.close()
        await self.lease_client.close()

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
        """Send a renewal every renew_interval_s, without waiting for the previous answer
        (up to RENEWALS_IN_FLIGHT outstanding): a busy api-server answering late must not
        space our heartbeats out, since each carries when it was sent."""
        in_flight: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()
        try:
            while True:
                # The first renewal goes at once: a registered node is NotReady until its
                # agent, fully up, renews (as the kubelet posts NodeReady once its runtime works).
                if len(in_flight) < RENEWALS_IN_FLIGHT:
                    task = asyncio.create_task(self._renew_once(), name="agent-renewal")
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                else:
                    log.warning("%d lease renewals unanswered; not sending more", len(in_flight))
                before = loop.time()
                await asyncio.sleep(self.renew_interval_s)
                late = loop.time() - before - self.renew_interval_s
                if late > self.renew_interval_s:
                    log.warning(
                        "lease renewal %.1f s late: this agent did not run meanwhile "
                        "(its event loop was blocked or the machine overloaded)",
                        late,
                    )
        finally:
            for task in in_flight:
                task.cancel()

    async def _renew_once(self) -> None:
        """One renewal; a server that forgot us gets a fresh registration.  Failures are
        logged when they start and when they end, not once a second."""
        try:
            if not await self.lease_client.renew_lease(self.name) and not self._registering:
                log.warning("api-server does not know node %s; registering again", self.name)
                self._registering = True
                try:
                    await self._reregister()
                finally:
                    self._registering = False
        except KnemuError as exc:
            if not self._renewal_failing:
                log.warning("lease renewal failed (%s); forwarding with the last tables "
                            "and retrying", exc.message)  # fmt: skip
            self._renewal_failing = True
        else:
            if self._renewal_failing:
                log.warning("lease renewal works again")
            self._renewal_failing = False

    async def _reregister(self) -> None:
        reg = await register(self.config, self.client, self.underlay_ip, self.identity, self.keys)
        self.renew_interval_s = reg.renew_interval_s
        node = reg.node
        running = self.router.node.pod_cidr
        if node.pod_cidr != running:
            log.error("node %s got podCIDR %s after registering again but runs %s; "
                      "restart the agent", self.name, node.pod_cidr, running)  # fmt: skip

    # -- the data plane ----------------------------------------------------------------------

    def dispatch(self, out: Output | None) -> None:
        if out is None:
            return
        kind, target, data = out
        if kind is OUT_POD:
            port = self.pods.ports.get(target)
            if port is not None:
                port.write(data)
        elif kind is OUT_HOST:
            if self.host_port is not None:
                self.host_port.write(data)
        elif self.underlay is not None:
            self.underlay.send(data, target)

    def _from_host(self, packet: bytes, now: float) -> None:
        self.dispatch(self.router.handle_host(packet, now))

    def _from_underlay(self, data: bytes, src: tuple[str, int], now: float) -> None:
        self.dispatch(self.router.handle_underlay(data, src, now))

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
        applied = self.tables.apply(type_, kind, obj, old)
        if applied:
            self._note_applied(type_, kind, obj)
        if applied or kind == "Node":
            self._nodeport_dirty.set()  # Nodes: which node announces LoadBalancer addresses
        if kind == "Pod":
            self.pods.kick(f"{obj.metadata.namespace}/{obj.metadata.name}")

    def _note_applied(self, type_: str, kind: str, obj: Any) -> None:
        """When (wall clock) each Service and EndpointSlice version reached this node's
        tables: ``/table`` shows it, so a change's propagation to every node can be measured
        without polling (bench/bench_scale.py)."""
        key = f"{kind}/{obj.metadata.namespace}/{obj.metadata.name}"
        if type_ == "DELETED":
            self.applied.pop(key, None)
        else:
            self.applied[key] = {"rv": int(obj.metadata.resource_version or 0), "at": time.time()}

    async def _on_synced(self) -> None:
        await self.pods.on_synced()

    def _set_bgp_peers(self, peers: dict[str, str]) -> None:
        if self.bgp is not None:
            self.bgp.set_peers(peers)
        if self.kernel_faults is not None:
            self.kernel_faults.changed()

    def _peer_addresses(self) -> dict[str, tuple[str, str]]:
        """Peer node name -> (underlay IP, podCIDR), for partitions in the kernel (bgp)."""
        return {p.name: (p.underlay_ip, p.pod_cidr) for p in self.router.routes.peers.values()}

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
        snap["encryption"] = self.config.encryption
        snap["backend_mismatch"] = dict(self.tables.mismatched)
        if self.bgp is not None:
            snap["bgp"] = self.bgp.status
        snap["impairments"] = self.faults.describe()
        policy = self.policy  # None: this node does not enforce
        snap["network_policy"] = {"enforced": False} if policy is None else policy.snapshot()
        snap["host_ports"] = self.pods.hostports.table.snapshot()
        snap["load_balancer_announced"] = sorted(self.steering.addresses)
        snap["external_local_steered"] = sorted(f"{n}/{p}" for p, n in self.steering.ports)
        snap["applied"] = dict(self.applied)
        return snap

    def metrics_text(self) -> str:
        """``GET /metrics``: every part's counters."""
        ports = {name: port.stats for name, port in self.pods.ports.items()}
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
            services = self.informer.list("Service")
            await self.nodeports.apply(tables.node_port_rules(services))
            await self.steering.apply(tables.local_node_ports(services))
            await self.healthchecks.apply(tables.health_check_ports(services))
            addresses = tables.load_balancer_addresses(services, self.tables.slices_of)
            ready = tables.ready_nodes(self.informer.list("Node"))
            await self.steering.announce(l2announce.announced_by(self.name, addresses, ready))


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
        config.pod_mtu_bytes,
        underlay_ip,
        backends.overhead_bytes(config.backend, config.encryption),
        config.backend if config.encryption == "none" else config.encryption,
    )
    log.info("pod MTU %d: %s", mtu.mtu_bytes, mtu.reason)
    config = config.replace(pod_mtu_bytes=mtu.mtu_bytes)  # every part is built with it
    identity = config.identity or socket.gethostname()
    client = ClusterClient(config.apiserver)
    keys = backends.KeyPair() if config.encryption == "wireguard" else None
    agent: Agent | None = None

    async def bring_up() -> None:
        nonlocal agent
        reg = await register(config, client, underlay_ip, identity, keys)
        agent = Agent(config, client, reg, keys)
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
