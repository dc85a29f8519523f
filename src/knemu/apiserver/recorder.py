"""core/v1 Events, deduplicated the way client-go's event recorder does.

client-go (tools/record/events_cache.go) keys an event by source, involved object, type,
reason and message; a repeat of the same key bumps ``count`` and ``lastTimestamp`` of the one
Event object instead of writing a new one.  It also aggregates floods of *similar* events
(same key but message): after 10 distinct messages within 10 minutes, further ones are folded
into one event whose message starts with "(combined from similar events): ".

Events about cluster-scoped objects (Nodes) live in the "default" namespace, as in
Kubernetes.  Event names are ``<involved name>.<hex nanoseconds>`` like kubectl shows them.
Events expire an hour after they were last seen (``prune``), as with kube-apiserver's
--event-ttl.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from knemu.apiserver.meta.naming import parse_rfc3339, rfc3339
from knemu.apiserver.storage.store import CLUSTER_SCOPED_KINDS, Store
from knemu.errors import AlreadyExists, NotFound

Obj = dict[str, Any]
AGGREGATE_MAX_EVENTS = 10  # client-go defaultAggregateMaxEvents
AGGREGATE_INTERVAL_S = 600.0  # client-go defaultAggregateIntervalInSeconds
EVENT_TTL_S = 3600.0  # kube-apiserver --event-ttl default (1 h)
CACHE_ENTRIES = 4096  # client-go maxLruCacheEntries
API_VERSIONS = {"Deployment": "apps/v1", "ReplicaSet": "apps/v1", "DaemonSet": "apps/v1"}


@dataclass
class _Similar:
    first_seen: float
    messages: set[str]


def involved_reference(involved: Obj) -> Obj:
    """An ObjectReference from a full object or from a reference-shaped dict."""
    if isinstance(involved.get("metadata"), dict):
        meta = involved["metadata"]
        kind = str(involved.get("kind", ""))
        ref = {
            "kind": kind,
            "namespace": "" if kind in CLUSTER_SCOPED_KINDS else meta.get("namespace", "default"),
            "name": meta.get("name", ""),
            "uid": meta.get("uid", ""),
            "apiVersion": involved.get("apiVersion") or API_VERSIONS.get(kind, "v1"),
        }
        if meta.get("resourceVersion"):
            ref["resourceVersion"] = meta["resourceVersion"]
        return {k: v for k, v in ref.items() if v != ""}
    keys = ("kind", "namespace", "name", "uid", "apiVersion", "fieldPath")
    return {k: involved[k] for k in keys if involved.get(k)}


class EventRecorder:
    """Writes and deduplicates Event objects in the store."""

    def __init__(self, store: Store, component: str = "knemu-apiserver") -> None:
        self._store = store
        self._component = component
        self._names: dict[tuple[str, ...], tuple[str, str]] = {}  # key -> (namespace, name)
        self._similar: dict[tuple[str, ...], _Similar] = {}
        self._serial = 0

    def record(
        self,
        involved: Obj,
        type: str,
        reason: str,
        message: str,
        now: float,
        *,
        component: str = "",
        host: str = "",
    ) -> None:
        """Record that ``reason`` happened to ``involved`` (an object or an ObjectReference)."""
        ref = involved_reference(involved)
        source = component or self._component
        ident = (source, host, ref.get("kind", ""), ref.get("namespace", ""), ref.get("name", ""))
        message, aggregated = self._aggregate((*ident, type, reason), message, now)
        # an aggregated event is one object for every similar message (client-go aggregateKey)
        key = (*ident, ref.get("uid", ""), type, reason, "" if aggregated else message)
        if key in self._names and self._bump(self._names[key], message, now):
            return
        namespace = ref.get("namespace") or "default"
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"namespace": namespace},
            "involvedObject": ref,
            "type": type,
            "reason": reason,
            "message": message,
            "count": 1,
            "firstTimestamp": rfc3339(now),
            "lastTimestamp": rfc3339(now),
            "source": {"component": source, **({"host": host} if host else {})},
            "reportingComponent": source,
            "reportingInstance": host or source,
        }
        self._names[key] = (namespace, self._create(event, str(ref.get("name", "event")), now))
        for cache in (self._names, self._similar):
            while len(cache) > CACHE_ENTRIES:  # bounded like client-go's LRU caches
                del cache[next(iter(cache))]

    def _aggregate(self, key: tuple[str, ...], message: str, now: float) -> tuple[str, bool]:
        similar = self._similar.get(key)
        if similar is None or now - similar.first_seen > AGGREGATE_INTERVAL_S:
            similar = self._similar[key] = _Similar(now, set())
        similar.messages.add(message)
        if len(similar.messages) > AGGREGATE_MAX_EVENTS:
            return f"(combined from similar events): {message}", True
        return message, False

    def _bump(self, where: tuple[str, str], message: str, now: float) -> bool:
        event = self._store.get("Event", where[0], where[1])
        if event is None:
            return False
        event["count"] = int(event.get("count") or 1) + 1
        event["message"] = message
        event["lastTimestamp"] = rfc3339(now)
        try:
            self._store.update(event, now, durable=False)
        except NotFound:
            return False
        return True

    def _create(self, event: Obj, base: str, now: float) -> str:
        nanos = int(now * 1e9)
        for _ in range(100):
            self._serial += 1
            name = f"{base}.{nanos + self._serial:x}"
            event["metadata"]["name"] = name
            try:
                self._store.create(event, now, durable=False)
            except AlreadyExists:
                continue
            return name
        raise AlreadyExists(f"no free Event name for {base!r}: the event log is full of collisions")

    def prune(self, now: float, ttl_s: float = EVENT_TTL_S) -> int:
        """Delete Events last seen more than ``ttl_s`` ago (kube-apiserver's --event-ttl)."""
        removed = 0
        for event in self._store.list("Event"):
            last = parse_rfc3339(event.get("lastTimestamp") or event.get("firstTimestamp"))
            if last is None or last + ttl_s > now:
                continue
            meta = event["metadata"]
            try:
                self._store.delete("Event", meta.get("namespace", ""), meta["name"], now)
            except NotFound:
                continue
            removed += 1
        return removed
