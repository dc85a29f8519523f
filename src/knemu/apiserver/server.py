"""The api-server process: store, watch hub, admission, node registry, controllers, REST, gRPC.

``ApiServer`` is an async context manager owning every part and two named tasks (the
controller loop and, in ``run``, the signal wait); ``serve`` runs one until told to stop;
``run`` is the blocking entry point used by ``knemu apiserver``.

The controller loop runs ``ControllerManager.sync(now)`` whenever the store changes (a burst
of writes is coalesced into one sync), when the manager's next deadline (lease expiry,
eviction toleration) comes due, and at least every 0.5 s.  Controllers never block serving:
each ``sync`` is one step of at most ``CONTROLLER_STEP_S`` (plus the controller running when
it ran out); an unfinished sync yields to the event loop for ``STEP_PAUSE_S`` and resumes.
So ``replicas: 20000`` is created in budgeted steps while requests (and SIGTERM) are served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from types import TracebackType

import grpc
from aiohttp import web

from knemu.apiserver import builtins
from knemu.apiserver.admission.pipeline import Admission
from knemu.apiserver.console.routes import add_console_routes
from knemu.apiserver.controllers import PASSIVE_KINDS, ControllerManager
from knemu.apiserver.grpc_api.pod_sources import PodTokens
from knemu.apiserver.grpc_api.service import bound_port, start_grpc_server
from knemu.apiserver.nodes import NodeRegistry
from knemu.apiserver.recorder import EventRecorder
from knemu.apiserver.rest import limits, tls
from knemu.apiserver.rest.access import Access
from knemu.apiserver.rest.connections import ConnectionGuard, ConnectionLimits, GuardedTCPSite
from knemu.apiserver.rest.handlers import RestApi
from knemu.apiserver.rest.proxy import NodeProxy
from knemu.apiserver.rest.token_request import ServiceAccountTokens
from knemu.apiserver.storage.store import Store, StoredEvent
from knemu.apiserver.storage.watch_hub import WatchHub
from knemu.config import ApiServerConfig
from knemu.errors import ConfigError, KnemuError, Unavailable
from knemu.pki import Credentials, ServerPki

log = logging.getLogger("knemu.apiserver")

CONTROLLER_PERIOD_S = 0.5  # sync at least this often (leases, evictions)
COALESCE_S = 0.02  # gather a burst of writes into one sync
CONTROLLER_STEP_S = 0.1  # time budget of one controller step on the event loop
STEP_PAUSE_S = 0.005  # between steps of an unfinished sync: requests are served meanwhile
_SHUTDOWN_GRACE_S = 1.0
FLUSH_EVERY_S = 0.1  # writes are durable against power loss within this (Store.flush)
STALL_PROBE_S = 0.25  # how often the event loop checks that it runs
STALL_LIMIT_S = 0.5  # a probe this much late: the process did not run, heartbeats went unheard
DB_FILE = "knemu.db"


def _budget(seconds: float) -> Callable[[], bool]:
    """``over_budget()`` for one controller step: True once ``seconds`` have passed."""
    end = time.monotonic() + seconds
    return lambda: time.monotonic() >= end


def advertise_address(listen_host: str) -> str:
    """The address pods reach this api-server at (kube-apiserver's --advertise-address): the
    listening address, or for a wildcard listener the address the host name resolves to (a
    container's own address on its network)."""
    if listen_host not in ("", "0.0.0.0", "::"):
        return listen_host
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def _split_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


class ApiServer:
    """Every api-server component, started by ``start()`` and stopped by ``stop()``."""

    def __init__(
        self,
        config: ApiServerConfig,
        clock: Callable[[], float] = time.time,
        connection_limits: ConnectionLimits | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.connections = ConnectionGuard(connection_limits or ConnectionLimits())
        self.rest_url = ""
        self.pki: ServerPki | None = None
        self.admin: Credentials | None = None  # the admin's credentials, once serving
        self.sa_tokens: ServiceAccountTokens | None = None
        self.rest_port = 0
        self.grpc_target = ""
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self._grpc: grpc.aio.Server | None = None
        self.store: Store | None = None
        self.hub: WatchHub | None = None

    async def __aenter__(self) -> ApiServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        cfg = self.config
        try:
            os.makedirs(cfg.data_dir, exist_ok=True)
            store = self.store = Store(
                os.path.join(cfg.data_dir, DB_FILE), cfg.event_history, sync_each_write=False
            )
        except OSError as exc:
            raise ConfigError(f"data_dir {cfg.data_dir!r}: {exc}") from None
        hub = self.hub = WatchHub(store, cfg.watch_queue_events)
        recorder = EventRecorder(store)
        admission = Admission(store, cfg, recorder)
        registry = NodeRegistry(store, cfg, recorder, machine_capacity())
        manager = ControllerManager(store, cfg, registry, recorder)
        builtins.bootstrap(store, admission, self.clock())
        store.add_listener(self._on_store_event)
        tokens = await self._start_rest(store, hub, admission)
        address = advertise_address(_split_hostport(cfg.listen)[0])
        builtins.publish_endpoint(store, admission, address, self.rest_port, self.clock())
        self._grpc = await start_grpc_server(
            cfg.grpc_listen, store, hub, registry, timings=cfg.timings, tokens=tokens
        )
        grpc_host = _split_hostport(cfg.grpc_listen)[0]
        self.grpc_target = f"{grpc_host}:{bound_port(self._grpc)}"
        task = asyncio.create_task(self._controller_loop(manager), name="apiserver-controllers")
        self._tasks.append(task)
        stalls = asyncio.create_task(self._watch_stalls(registry), name="apiserver-stalls")
        self._tasks.append(stalls)
        flusher = asyncio.create_task(self._flush_store(store), name="apiserver-fsync")
        self._tasks.append(flusher)
        log.info(
            "knemu apiserver ready: rest=%s grpc=%s data=%s",
            self.rest_url,
            self.grpc_target,
            os.path.abspath(cfg.data_dir),
        )

    async def _start_rest(self, store: Store, hub: WatchHub, admission: Admission) -> PodTokens:
        """Serve the REST API; what issues pods' ServiceAccount tokens (for the gRPC side)."""
        host, port = _split_hostport(self.config.listen)
        pki = self.pki = tls.server_pki(self.config, host)
        tokens = self.sa_tokens = ServiceAccountTokens(
            store, tls.service_account_issuer(pki), self.clock
        )
        authenticator = tls.authenticator(pki)
        authenticator.service_accounts = tokens.user
        access = Access(store, authenticator)
        app = web.Application(
            client_max_size=limits.MAX_BODY_BYTES, middlewares=[access.middleware]
        )
        NodeProxy(store).add_routes(app)  # before the REST catch-all routes
        tokens.add_routes(app)
        add_console_routes(app, store, hub, access)  # the web console at /console/
        RestApi(store, hub, admission, access, clock=self.clock).add_routes(app)
        # handler_cancellation: a watch whose client went away is cancelled at once.
        runner = self._runner = web.AppRunner(
            app,
            handler_cancellation=True,
            shutdown_timeout=_SHUTDOWN_GRACE_S,
            access_log=None,
            keepalive_timeout=self.connections.limits.idle_timeout_s,
        )
        await runner.setup()
        try:
            site = GuardedTCPSite(runner, host, port, self.connections, pki.server_ssl_context())
            await site.start()
        except OSError as exc:
            raise Unavailable(
                f"REST: cannot listen on {self.config.listen} ({exc.strerror}); is another "
                "api-server running? pick another address with listen"
            ) from None
        bound = self.rest_port = runner.addresses[0][1]
        self.rest_url = f"https://{tls.url_host(host)}:{bound}"
        # Listening on every address: the admin kubeconfig names loopback (in its SANs).
        local = f"https://{tls.url_host(tls.client_host(host))}:{bound}"
        self.admin = tls.write_admin_kubeconfig(pki, self.config.data_dir, local)
        return PodTokens(tokens.issue_for_pod, pki.ca.cert_pem)

    def _on_store_event(self, event: StoredEvent) -> None:
        if event.kind not in PASSIVE_KINDS:  # heartbeats and Events wake no controller
            self._dirty.set()

    async def _controller_loop(self, manager: ControllerManager) -> None:
        failed, settled = False, True
        while True:
            try:
                if settled:
                    await self._wait_for_work(manager, CONTROLLER_PERIOD_S if failed else None)
                else:
                    await asyncio.sleep(STEP_PAUSE_S)  # let requests in between steps
                settled = manager.sync(self.clock(), _budget(CONTROLLER_STEP_S))
                failed = False
            except Exception:  # keep serving; the next pass may succeed
                log.exception("controller sync failed; retrying in %.1f s", CONTROLLER_PERIOD_S)
                failed, settled = True, True
            # sync ran synchronously: every write since the wake-up was its own
            self._dirty.clear()

    async def _flush_store(self, store: Store) -> None:
        """Group commit: fsync what was written in the last FLUSH_EVERY_S, off the event loop
        (Store's docstring says why)."""
        flushed = store.resource_version
        while True:
            await asyncio.sleep(FLUSH_EVERY_S)
            if store.resource_version != flushed:
                flushed = store.resource_version
                await asyncio.to_thread(store.flush)

    async def _watch_stalls(self, registry: NodeRegistry) -> None:
        """Notice when this process did not run (its event loop blocked, the machine
        overloaded, SIGSTOP): heartbeats could not be heard meanwhile, so that time must not
        count toward any node's grace (NodeRegistry.discount_unobserved).  Without this, an
        api-server that was itself slow declared every node dead at once."""
        while True:
            before = self.clock()
            await asyncio.sleep(STALL_PROBE_S)
            after = self.clock()
            if after - before > STALL_PROBE_S + STALL_LIMIT_S:
                registry.discount_unobserved(before + STALL_PROBE_S, after)
                log.warning(
                    "the api-server did not run for %.1f s; node leases get that time back",
                    after - before - STALL_PROBE_S,
                )

    async def _wait_for_work(self, manager: ControllerManager, wait_s: float | None) -> None:
        """Until the store changed (plus a moment to gather the burst), the manager's next
        deadline, or CONTROLLER_PERIOD_S, whichever comes first."""
        if wait_s is None:
            now = self.clock()
            deadline = manager.next_deadline(now)
            wait_s = CONTROLLER_PERIOD_S
            if deadline is not None:
                wait_s = max(0.0, min(wait_s, deadline - now))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._dirty.wait(), wait_s)
        if self._dirty.is_set():
            await asyncio.sleep(COALESCE_S)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.hub is not None:
            self.hub.close()  # ends every watch stream
        if self._grpc is not None:
            await self._grpc.stop(_SHUTDOWN_GRACE_S)
            self._grpc = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.store is not None:
            self.store.flush()
            self.store.close()
            self.store = None


async def serve(
    config: ApiServerConfig,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    started: Callable[[ApiServer], None] | None = None,
) -> None:
    """Run an api-server until ``stop`` is set (or the task is cancelled).

    ``ready`` is set once everything listens; ``started`` receives the running server (its
    ``rest_url`` and ``grpc_target`` carry the real ports when the config asked for port 0).
    """
    async with ApiServer(config) as server:
        if started is not None:
            started(server)
        if ready is not None:
            ready.set()
        await (stop or asyncio.Event()).wait()


async def _main(config: ApiServerConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(config, stop=stop)
    log.info("knemu apiserver stopped")


def run(config: ApiServerConfig) -> int:
    """Blocking entry point: serve until SIGTERM/SIGINT; 0 on a clean stop."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        asyncio.run(_main(config))
    except KnemuError as err:
        log.error("%s", err.message)
        return err.exit_code
    return 0


def machine_capacity() -> dict[str, str]:
    """This machine's CPUs and memory, which every emulated node shares."""
    capacity = {"cpu": str(os.cpu_count() or 1)}
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    capacity["memory"] = f"{line.split()[1]}Ki"
    except OSError:
        pass  # not Linux: no memory figure
    return capacity
