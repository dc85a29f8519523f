"""gRPC service knemu.v1.Cluster: watch streams, node registration, leases, pod status.

A thin asyncio adapter: Watch turns a WatchHub subscription into the stream described in
knemu.proto's header (snapshot or backlog, SYNCED, live events in resourceVersion order, and
RELIST then end of stream for a watcher that is too far behind), converting stored JSON with
``knemu.apiserver.grpc_api.convert``; the unary calls delegate to the NodeRegistry.  Every
knemu error becomes the gRPC status its class names (``errors.KnemuError.grpc_code``).

A watcher that stops reading is bounded twice: HTTP/2 flow control stops our writes once its
window is full, and meanwhile its hub queue overflows, is dropped and unsubscribed; when the
watcher reads again it gets what was in flight, then RELIST, then the end of the stream.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, Protocol

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from knemu.apiserver.grpc_api.convert import WATCHABLE_KINDS, node_to_proto, to_object
from knemu.apiserver.grpc_api.pod_sources import PodTokens, pod_sources
from knemu.apiserver.storage.store import Store, StoredEvent
from knemu.apiserver.storage.watch_hub import Subscription, WatchHub
from knemu.apiserver.storage.watch_quota import WatchQuota
from knemu.config import Timings
from knemu.errors import Gone, KnemuError, Unavailable
from knemu.proto import knemu_pb2 as pb, knemu_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SERVICE = "knemu.v1.Cluster"
MAX_WATCHES_PER_PEER = 200  # open Watch streams per client address
MAX_REQUEST_BYTES = 1024 * 1024
ENCODED_EVENTS_KEPT = 4096  # serialised watch events shared by all watchers (EncodedEvents)
SERVER_OPTIONS: list[tuple[str, int]] = [
    # Never share a port with another process: tests and `knemu up` pick free ports.
    ("grpc.so_reuseport", 0),
    # Accept the clients' keepalive pings (knemu.proto.client pings every 10 s) and ping
    # watchers ourselves so that a vanished node's stream is closed and its queue freed.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    # Bounded everything: requests are small (a pod status, an event); a larger one is
    # RESOURCE_EXHAUSTED before it is parsed.  Watch events carry objects of at most
    # rest.limits.MAX_OBJECT_BYTES of JSON, smaller as protobuf.
    ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
    ("grpc.max_send_message_length", 8 * 1024 * 1024),
    ("grpc.max_concurrent_streams", 256),  # per connection
    ("grpc.max_metadata_size", 16 * 1024),
]

_EVENT_TYPES = {
    "ADDED": pb.WatchEvent.ADDED,
    "MODIFIED": pb.WatchEvent.MODIFIED,
    "DELETED": pb.WatchEvent.DELETED,
}


class Registry(Protocol):
    """What the service needs of knemu.apiserver.nodes.NodeRegistry (docs/INTERFACES.md)."""

    def register(
        self,
        name: str,
        identity: str,
        internal_ip: str,
        vtep_mac: str,
        vxlan_port: int,
        kubelet_port: int,
        labels: dict[str, str],
        now: float,
        wireguard_public_key: str = "",
    ) -> dict[str, Any]: ...

    def renew(self, name: str, now: float, sent_at: float = 0.0) -> bool: ...

    def report_pod_status(self, report: dict[str, Any], now: float) -> bool: ...

    def record_event(self, report: dict[str, Any], now: float) -> None: ...


def event_to_proto(event: StoredEvent) -> pb.WatchEvent:
    return pb.WatchEvent(
        type=_EVENT_TYPES[event.type],
        resource_version=event.rv,
        object=to_object(event.kind, event.obj),
    )


class EncodedEvents:
    """Each event converted and serialised once, however many watchers it goes to: the
    api-server's cost of a change is one encoding plus one write per watcher (O(nodes)),
    not one conversion per watcher.  Bounded: the most recent ``size`` encodings are kept
    (watchers take an event within moments of each other; a late one encodes it again)."""

    def __init__(self, size: int = ENCODED_EVENTS_KEPT) -> None:
        self._size = size
        self._kept: OrderedDict[tuple[int, str, str], bytes] = OrderedDict()
        self.encoded = 0  # statistics: encodings done (a cache miss each)

    def get(self, event: StoredEvent) -> bytes:
        key = (event.rv, event.type, event.kind)  # a snapshot's ADDED differs from the live event
        data = self._kept.get(key)
        if data is None:
            data = event_to_proto(event).SerializeToString()
            self.encoded += 1
            self._kept[key] = data
            if len(self._kept) > self._size:
                self._kept.popitem(last=False)
        return data


def _relist(reason: str, rv: int) -> pb.WatchEvent:
    return pb.WatchEvent(type=pb.WatchEvent.RELIST, resource_version=rv, message=reason)


def _as_dict(message: Any) -> dict[str, Any]:
    """A request as a dict keyed by its proto field names, every field present."""
    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )


async def _abort(context: grpc.aio.ServicerContext, exc: KnemuError) -> NoReturn:
    code = getattr(grpc.StatusCode, exc.grpc_code, grpc.StatusCode.INTERNAL)
    await context.abort(code, exc.message)
    raise AssertionError("context.abort returned")  # abort always raises


def _peer_host(peer: str) -> str:
    """``ipv4:10.0.0.1:5000`` / ``ipv6:[::1]:5000`` -> the address without the port."""
    return peer.rsplit(":", 1)[0] if peer.count(":") >= 2 else peer


class ClusterService(pb_grpc.ClusterServicer):
    def __init__(
        self,
        store: Store,
        hub: WatchHub,
        registry: Registry,
        timings: Timings,
        tokens: PodTokens | None = None,
    ) -> None:
        self._store = store
        self._tokens = tokens
        self._hub = hub
        self._registry = registry
        self._timings = timings
        self.watches = WatchQuota(MAX_WATCHES_PER_PEER)
        self.encoded = EncodedEvents()

    async def Watch(
        self, request: pb.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchEvent | bytes]:
        kinds = await self._watch_kinds(request, context)
        who = request.watcher or context.peer()
        since = request.since_resource_version
        log.info(
            "watch %s: kinds %s from rv %d (store at rv %d)",
            who,
            ",".join(sorted(kinds)),
            since,
            self._store.resource_version,
        )
        peer = _peer_host(context.peer())
        try:
            self.watches.acquire(peer)
        except KnemuError as exc:
            await _abort(context, exc)
        try:
            sub = self._hub.subscribe(kinds, since)
        except Gone as exc:
            self.watches.release(peer)
            yield _relist(exc.message, self._store.resource_version)
            return
        try:
            async for event in _stream(sub, self.encoded):
                yield event
        finally:
            sub.close()
            self.watches.release(peer)
            log.info("watch %s: ended", who)

    async def _watch_kinds(
        self, request: pb.WatchRequest, context: grpc.aio.ServicerContext
    ) -> frozenset[str]:
        kinds = frozenset(request.kinds) or WATCHABLE_KINDS
        unknown = sorted(kinds - WATCHABLE_KINDS)
        if unknown:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Watch: kind(s) {', '.join(repr(k) for k in unknown)} cannot be watched; "
                f"ask for some of {', '.join(sorted(WATCHABLE_KINDS))}",
            )
        if request.since_resource_version < 0:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Watch: since_resource_version {request.since_resource_version} is negative; "
                "use 0 to list or a resourceVersion you have seen",
            )
        return kinds

    async def RegisterNode(
        self, request: pb.RegisterNodeRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterNodeResponse:
        try:
            node = self._registry.register(
                request.name,
                request.identity,
                request.internal_ip,
                request.vtep_mac,
                request.vxlan_port,
                request.kubelet_port,
                dict(request.labels),
                time.time(),
                wireguard_public_key=request.wireguard_public_key,
            )
        except KnemuError as exc:
            await _abort(context, exc)
        return pb.RegisterNodeResponse(
            node=node_to_proto(node),
            lease_duration_s=self._timings.node_grace_s,
            renew_interval_s=self._timings.lease_renew_s,
        )

    async def RenewLease(
        self, request: pb.RenewLeaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.RenewLeaseResponse:
        try:
            known = self._registry.renew(request.node_name, time.time(), request.sent_at_s)
        except KnemuError as exc:
            await _abort(context, exc)
        return pb.RenewLeaseResponse(known=known)

    async def ReportPodStatus(
        self, request: pb.PodStatusReport, context: grpc.aio.ServicerContext
    ) -> pb.PodStatusAck:
        try:
            known = self._registry.report_pod_status(_as_dict(request), time.time())
        except KnemuError as exc:
            await _abort(context, exc)
        return pb.PodStatusAck(known=known)

    async def RecordEvent(
        self, request: pb.EventReport, context: grpc.aio.ServicerContext
    ) -> pb.EventAck:
        try:
            self._registry.record_event(_as_dict(request), time.time())
        except KnemuError as exc:
            await _abort(context, exc)
        return pb.EventAck()

    async def GetPodSources(
        self, request: pb.PodSourcesRequest, context: grpc.aio.ServicerContext
    ) -> pb.PodSources:
        try:
            return pod_sources(self._store.get, request, self._tokens)
        except KnemuError as exc:
            await _abort(context, exc)


async def _stream(
    sub: Subscription, encoded: EncodedEvents
) -> AsyncIterator[pb.WatchEvent | bytes]:
    """Initial events, SYNCED, then live events until the subscription is Gone (events as
    serialised WatchEvent messages, shared between watchers)."""
    try:
        for event in sub.initial:  # decoded one by one as the stream is written
            yield encoded.get(event)
    except Gone as exc:  # the backlog was compacted under a slow reader
        yield _relist(exc.message, sub.synced_rv)
        return
    yield pb.WatchEvent(type=pb.WatchEvent.SYNCED, resource_version=sub.synced_rv)
    last = sub.synced_rv
    while True:
        try:
            event = await sub.next()
        except Gone as exc:
            if sub.closed:
                # The api-server is shutting down: end the stream without RELIST so that
                # watchers resume from their last rv once it is back, instead of relisting.
                return
            yield _relist(exc.message, last)
            return
        last = event.rv
        yield encoded.get(event)


class _Malformed:
    """What a request that protobuf cannot parse deserialises to (see ``_add_service``)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _tolerant(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:
            return _Malformed(str(exc))

    return deserialize


async def _refuse(context: grpc.aio.ServicerContext, bad: _Malformed) -> NoReturn:
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"the request is not a valid protobuf message ({bad.reason}); send a knemu.v1 message",
    )
    raise AssertionError("context.abort returned")


def _unary(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, _Malformed):
            await _refuse(context, request)
        return await method(request, context)

    return handle


def _streaming(method: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if isinstance(request, _Malformed):
            await _refuse(context, request)
        async for item in method(request, context):
            yield item

    return handle


def _serialized(message: pb.WatchEvent | bytes) -> bytes:
    """Watch events come already serialised (EncodedEvents); SYNCED and RELIST do not."""
    return message if isinstance(message, bytes) else message.SerializeToString()


def _add_service(service: ClusterService, server: grpc.aio.Server) -> None:
    """What ``add_ClusterServicer_to_server`` does, except that a request protobuf cannot
    parse is INVALID_ARGUMENT (the generated code lets DecodeError become UNKNOWN)."""
    unary: list[tuple[str, Any, Callable[..., Awaitable[Any]]]] = [
        ("RegisterNode", pb.RegisterNodeRequest, service.RegisterNode),
        ("RenewLease", pb.RenewLeaseRequest, service.RenewLease),
        ("ReportPodStatus", pb.PodStatusReport, service.ReportPodStatus),
        ("RecordEvent", pb.EventReport, service.RecordEvent),
        ("GetPodSources", pb.PodSourcesRequest, service.GetPodSources),
    ]
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            _unary(method),
            request_deserializer=_tolerant(request.FromString),
            response_serializer=lambda m: m.SerializeToString(),
        )
        for name, request, method in unary
    }
    handlers["Watch"] = grpc.unary_stream_rpc_method_handler(
        _streaming(service.Watch),
        request_deserializer=_tolerant(pb.WatchRequest.FromString),
        response_serializer=_serialized,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


async def start_grpc_server(
    listen: str,
    store: Store,
    hub: WatchHub,
    registry: Registry,
    *,
    timings: Timings | None = None,
    tokens: PodTokens | None = None,
) -> grpc.aio.Server:
    """Serve knemu.v1.Cluster on ``listen`` (HOST:PORT; port 0 picks a free one).

    The port actually bound is on the returned server as ``server.bound_port`` (read it with
    ``bound_port(server)``).  Stop with ``await server.stop(grace_s)``.  ``timings`` gives the
    lease duration and renew interval told to registering nodes (default: Timings()); ``tokens``
    issues pods' ServiceAccount tokens for GetPodSources (None: no tokens).
    """
    server = grpc.aio.server(options=SERVER_OPTIONS)
    service = ClusterService(store, hub, registry, timings or Timings(), tokens)
    _add_service(service, server)
    try:
        port = server.add_insecure_port(listen)
    except RuntimeError as exc:
        raise Unavailable(
            f"gRPC: cannot listen on {listen} ({exc}); is another api-server using that port? "
            "pick another with grpc_listen"
        ) from None
    await server.start()
    server.bound_port = port
    log.info("gRPC service knemu.v1.Cluster listening on %s (port %d)", listen, port)
    return server


def bound_port(server: grpc.aio.Server) -> int:
    """The TCP port a server made by start_grpc_server listens on."""
    port: int = server.bound_port
    return port
