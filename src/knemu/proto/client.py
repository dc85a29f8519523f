"""The api-server's gRPC client: ``ClusterClient`` (unary calls) and ``Informer`` (watch cache).

Node agents and the DNS component use these; they depend only on the generated protobuf
modules, never on the api-server's code (docs/INTERFACES.md "Layers").  The informer is a thin
asyncio adapter around ``knemu.proto.state``: it opens Watch streams, feeds every event to
the link state machine and the cache, and hands the resulting changes to ``on_event``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import grpc

from knemu import errors
from knemu.config import KUBELET_PORT, VXLAN_PORT
from knemu.proto import knemu_pb2 as pb, knemu_pb2_grpc as pb_grpc
from knemu.proto.state import (
    WATCHABLE_KINDS,
    Change,
    LinkInput,
    LinkState,
    WatchCache,
    input_of,
    next_state,
)

log = logging.getLogger(__name__)

# Reconnect quickly after an api-server restart: grpc's own channel backoff defaults to
# 1 s growing to 120 s, far slower than the lease renewal it must serve (1 s by default).
CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 10_000),  # detect a vanished api-server host
    # Each client its own connection state: grpc otherwise shares subchannels process-wide,
    # and a new client would inherit another's "connection refused" backoff after a restart.
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.keepalive_timeout_ms", 5_000),
]
UNARY_TIMEOUT_S = 10.0

# grpc status code name -> knemu error class (the inverse of errors.*.grpc_code).
_ERROR_OF_CODE: dict[str, type[errors.KnemuError]] = {
    "INVALID_ARGUMENT": errors.LocalError,
    "NOT_FOUND": errors.NotFound,
    "PERMISSION_DENIED": errors.Forbidden,
    "ALREADY_EXISTS": errors.AlreadyExists,
    "ABORTED": errors.Conflict,
    "OUT_OF_RANGE": errors.Gone,
    "RESOURCE_EXHAUSTED": errors.Exhausted,
    "UNAVAILABLE": errors.Unavailable,
    "DEADLINE_EXCEEDED": errors.Unavailable,
}

EventHandler = Callable[[str, str, Any, Any | None], Awaitable[None] | None]
SyncedHandler = Callable[[], Awaitable[None] | None]
Changes = list[Change]


def error_from_rpc(target: str, method: str, exc: grpc.aio.AioRpcError) -> errors.KnemuError:
    """Turn a failed call into the knemu error its status code stands for."""
    code = exc.code().name if exc.code() is not None else "UNKNOWN"
    cls = _ERROR_OF_CODE.get(code, errors.RemoteError)
    detail = exc.details() or code
    if cls is errors.Unavailable:
        return errors.Unavailable(
            f"api-server {target}: {method} failed ({code}: {detail}); check that "
            "`knemu apiserver` is running and reachable at that address"
        )
    return cls(f"api-server {target}: {method}: {detail}")


class ClusterClient:
    """Unary calls of service knemu.v1.Cluster plus the raw Watch stream."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        self._stub = pb_grpc.ClusterStub(self._channel)  # type: ignore[no-untyped-call]

    async def register_node(
        self,
        *,
        name: str = "",
        identity: str = "",
        internal_ip: str = "",
        vtep_mac: str = "",
        vxlan_port: int = VXLAN_PORT,
        kubelet_port: int = KUBELET_PORT,
        labels: Mapping[str, str] | None = None,
        wireguard_public_key: str = "",
    ) -> pb.RegisterNodeResponse:
        request = pb.RegisterNodeRequest(
            name=name,
            identity=identity,
            internal_ip=internal_ip,
            vtep_mac=vtep_mac,
            vxlan_port=vxlan_port,
            kubelet_port=kubelet_port,
            labels=dict(labels or {}),
            wireguard_public_key=wireguard_public_key,
        )
        reply: pb.RegisterNodeResponse = await self._unary("RegisterNode", request)
        return reply

    async def renew_lease(self, name: str) -> bool:
        """False: the Node object is gone and the agent must register again."""
        request = pb.RenewLeaseRequest(node_name=name, sent_at_s=time.time())
        reply: pb.RenewLeaseResponse = await self._unary("RenewLease", request)
        return reply.known

    async def report_pod_status(self, report: pb.PodStatusReport) -> bool:
        """False: the pod no longer exists (or was re-created with another uid)."""
        reply: pb.PodStatusAck = await self._unary("ReportPodStatus", report)
        return reply.known

    async def record_event(self, report: pb.EventReport) -> None:
        await self._unary("RecordEvent", report)

    async def get_pod_sources(
        self,
        node_name: str,
        namespace: str,
        pod_name: str,
        pod_uid: str,
        service_account_token: bool = False,
    ) -> pb.PodSources:
        """The ConfigMaps and Secrets pod ``namespace/pod_name`` names (bound to this node),
        and a new ServiceAccount token for it when ``service_account_token``."""
        request = pb.PodSourcesRequest(
            node_name=node_name, namespace=namespace, pod_name=pod_name, pod_uid=pod_uid,
            service_account_token=service_account_token,
        )  # fmt: skip
        reply: pb.PodSources = await self._unary("GetPodSources", request)
        return reply

    async def watch(
        self, kinds: Iterable[str], since_rv: int, watcher: str
    ) -> AsyncGenerator[pb.WatchEvent, None]:
        """The raw Watch stream (see knemu.proto header); errors become knemu errors."""
        request = pb.WatchRequest(
            kinds=sorted(kinds), since_resource_version=since_rv, watcher=watcher
        )
        call = self._stub.Watch(request)
        try:
            async for event in call:
                yield event
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(self.target, "Watch", exc) from None
        finally:
            call.cancel()

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> ClusterClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _unary(self, method: str, request: Any) -> Any:
        try:
            return await getattr(self._stub, method)(request, timeout=UNARY_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(self.target, method, exc) from None


class Backoff:
    """Capped exponential backoff with seeded jitter ("equal jitter": half fixed, half random)."""

    def __init__(self, base_s: float, cap_s: float, seed: int) -> None:
        self.base_s, self.cap_s = base_s, cap_s
        self.failures = 0
        self._rng = random.Random(seed)

    def next_delay_s(self) -> float:
        ceiling = min(self.cap_s, self.base_s * (1 << min(self.failures, 30)))
        self.failures += 1
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.failures = 0


class Informer:
    """A local, always-converging copy of some kinds, fed by one Watch stream at a time."""

    def __init__(
        self,
        client: ClusterClient,
        kinds: Iterable[str],
        watcher: str,
        on_event: EventHandler,
        on_synced: SyncedHandler | None = None,
        *,
        backoff_base_s: float = 0.1,
        backoff_cap_s: float = 5.0,
        seed: int = 0,
    ) -> None:
        self.kinds = frozenset(kinds)
        unknown = sorted(self.kinds - WATCHABLE_KINDS)
        if unknown:
            raise errors.LocalError(
                f"informer {watcher!r}: kind(s) {', '.join(unknown)} cannot be watched; "
                f"use {', '.join(sorted(WATCHABLE_KINDS))}"
            )
        self.watcher = watcher
        self._client = client
        self._on_event = on_event
        self._on_synced = on_synced
        self._cache = WatchCache()
        self._backoff = Backoff(backoff_base_s, backoff_cap_s, seed)
        self._synced_once = asyncio.Event()
        self._progress = asyncio.Condition()
        self.state = LinkState.DISCONNECTED
        self.relists = 0  # RELIST events received
        self.reconnects = 0  # streams that broke and were reopened

    # ---- reads ---------------------------------------------------------------------------

    @property
    def last_rv(self) -> int:
        return self._cache.last_rv

    def get(self, kind: str, namespace: str, name: str) -> Any | None:
        return self._cache.objects.get((kind, namespace, name))

    def list(self, kind: str) -> list[Any]:
        return self._cache.list(kind)

    def statistics(self) -> dict[str, Any]:
        """Link state and counters, for logs and metrics."""
        return {
            "state": self.state.value,
            "last_rv": self.last_rv,
            "objects": len(self._cache.objects),
            "relists": self.relists,
            "reconnects": self.reconnects,
        }

    async def wait_synced(self) -> None:
        """Return once the first list has been applied (client-go's HasSynced)."""
        await self._synced_once.wait()

    async def wait_rv(self, rv: int) -> None:
        """Return once every event up to resourceVersion ``rv`` has been applied.

        ``rv`` must be one the informer will see: an event of a watched kind or a SYNCED
        marker.  Writes of other kinds also move the store's rv but never reach this stream.
        """
        async with self._progress:
            await self._progress.wait_for(lambda: self._cache.last_rv >= rv)

    # ---- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Watch forever: resume after broken streams, relist after RELIST; cancel to stop."""
        since_rv = 0
        while True:
            relist = await self._stream_once(since_rv)
            if relist:
                self.relists += 1
                self._cache.last_rv, since_rv = 0, 0
                if self._backoff.failures == 0:
                    # The server is up and asked us to list: do it now, but count it, so
                    # that relists repeating before a SYNCED back off like failures do.
                    self._backoff.failures = 1
                    continue
            else:
                self.reconnects += 1
                since_rv = self._cache.last_rv
            await asyncio.sleep(self._backoff.next_delay_s())

    async def _stream_once(self, since_rv: int) -> bool:
        """Run one Watch stream to its end; True if it ended with RELIST."""
        self._transition(LinkInput.DIAL)
        self._cache.begin(since_rv)
        stream = self._client.watch(self.kinds, since_rv, self.watcher)
        try:
            async with contextlib.aclosing(stream):  # cancels the call however we leave
                async for event in stream:
                    if await self._handle(event):
                        return True
            log.info("informer %s: watch stream ended by the api-server", self.watcher)
        except errors.KnemuError as exc:
            log.info("informer %s: watch stream broke: %s", self.watcher, exc.message)
        except Exception:  # a bug must not end the informer: log it, reconnect
            log.exception("informer %s: unexpected failure in the watch stream", self.watcher)
        if self.state is not LinkState.DISCONNECTED:
            self._transition(LinkInput.BROKEN)
        return False

    async def _handle(self, event: pb.WatchEvent) -> bool:
        """Apply one event; True if it was RELIST (the server ends the stream)."""
        self._transition(input_of(event))
        if event.type == pb.WatchEvent.RELIST:
            log.info("informer %s: relist requested: %s", self.watcher, event.message)
            self._cache.apply(event)
            return True
        await self._deliver(self._cache.apply(event))
        if event.type == pb.WatchEvent.SYNCED:
            await self._synced()
        return False

    def _transition(self, event: LinkInput) -> None:
        self.state = next_state(self.state, event)

    async def _synced(self) -> None:
        self._backoff.reset()
        self._synced_once.set()
        await self._notify_progress()
        if self._on_synced is not None:
            await _call(self._on_synced, "on_synced", self.watcher)

    async def _deliver(self, changes: Changes) -> None:
        for change in changes:
            await _call(self._on_event, "on_event", self.watcher, *_as_args(change))
        if changes:
            await self._notify_progress()

    async def _notify_progress(self) -> None:
        async with self._progress:
            self._progress.notify_all()


def _as_args(change: Change) -> tuple[str, str, Any, Any | None]:
    return change.type, change.kind, change.obj, change.old


async def _call(handler: Callable[..., Any], role: str, watcher: str, *args: Any) -> None:
    """Run a sync or async handler; its failure is logged, never allowed to stop the watch."""
    try:
        result = handler(*args)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("informer %s: %s handler failed on %r", watcher, role, args[:2])
