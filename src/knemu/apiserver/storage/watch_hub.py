"""Watch hub: fans store events out to watchers (the REST ``?watch=true`` and gRPC Watch).

Like the Kubernetes watch cache (https://kubernetes.io/docs/reference/using-api/api-concepts/
#efficient-detection-of-changes): a new watcher gets either a snapshot of the current objects
(``since_rv == 0``, every object as ADDED) or the backlog of events after ``since_rv``, then
live events, with no gap and no duplicate between the two because the store and the hub run
synchronously in one thread (the snapshot and the registration happen without a write between
them).

Each subscription has a bounded queue, and so is its backlog: resuming from more than
``queue_events`` changes ago raises ``Gone`` without loading them.  A watcher that does not
keep up is not allowed to grow memory without limit: when its queue is full, its queue is
dropped and its next ``next()`` raises ``Gone`` ("watcher too slow ... relist"), the same
contract as a Kubernetes watch that is terminated and must relist.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from knemu.apiserver.storage.store import Store, StoredEvent
from knemu.errors import Gone

BACKLOG_PAGE = 32  # events read from the store at a time for a resuming watcher


@dataclass
class HubStatistics:
    subscribers: int
    delivered: int
    overflowed: int  # subscriptions ended because their queue was full
    dropped_events: int  # events discarded with those queues


class Subscription:
    """One watcher's view: ``initial`` events (an iterator, decoded as it is consumed; it
    raises Gone if the history is compacted under a slow reader), then ``await next()``."""

    def __init__(
        self,
        hub: WatchHub,
        kinds: frozenset[str],
        initial: Iterator[StoredEvent],
        synced_rv: int,
        limit: int,
    ) -> None:
        self.kinds = kinds
        self.initial = initial
        self.synced_rv = synced_rv
        self._hub = hub
        self._limit = limit
        self._queue: deque[StoredEvent] = deque()
        self._wakeup = asyncio.Event()
        self._overflow_reason = ""
        self.closed = False

    def wants(self, kind: str) -> bool:
        return not self.kinds or kind in self.kinds

    def push(self, event: StoredEvent) -> None:
        """Called by the hub for every committed event of a wanted kind."""
        if self.closed or self._overflow_reason:
            return
        if len(self._queue) >= self._limit:
            dropped = len(self._queue) + 1
            self._queue.clear()  # free the memory now; the watcher must relist anyway
            self._overflow_reason = (
                f"watcher too slow: more than {self._limit} events queued (rv {event.rv}); "
                "relist and watch again from the list's resourceVersion"
            )
            self._hub.note_overflow(dropped)
            self._hub.unsubscribe(self)  # no more events: memory stays bounded
        else:
            self._queue.append(event)
        self._wakeup.set()

    def pending(self) -> int:
        return len(self._queue)

    async def next(self) -> StoredEvent:
        """The next live event; raises Gone once the queue has overflowed."""
        while True:
            if self._overflow_reason:
                raise Gone(self._overflow_reason)
            if self._queue:
                self._hub.note_delivered()
                return self._queue.popleft()
            if self.closed:
                raise Gone("watch closed: the api-server is shutting down; relist")
            self._wakeup.clear()
            await self._wakeup.wait()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._queue.clear()
            self._hub.unsubscribe(self)
            self._wakeup.set()


class WatchHub:
    """Registers one store listener and hands each event to every interested subscription."""

    def __init__(self, store: Store, queue_events: int) -> None:
        if queue_events < 1:
            raise ValueError("queue_events must be >= 1")
        self._store = store
        self._limit = queue_events
        self._subs: set[Subscription] = set()
        self._delivered = 0
        self._overflowed = 0
        self._dropped = 0
        store.add_listener(self._on_event)

    def subscribe(self, kinds: set[str] | frozenset[str], since_rv: int) -> Subscription:
        """Start watching ``kinds`` (empty = every kind); raises Gone if since_rv is too old."""
        wanted = frozenset(kinds)
        initial: Iterator[StoredEvent]
        if since_rv <= 0:
            initial = self._snapshot(wanted)
        else:
            behind = self._store.resource_version - since_rv
            if behind > self._limit:
                # More than a queue's worth of changes to replay: loading them would cost as
                # much memory as an overflowing queue, so the answer is the same (relist).
                raise Gone(
                    f"resourceVersion {since_rv} is {behind} changes behind, more than a "
                    f"watcher may queue ({self._limit}); relist and watch from the list's "
                    "resourceVersion"
                )
            if since_rv > self._store.resource_version:
                raise Gone(
                    f"resourceVersion {since_rv} is newer than the store's latest "
                    f"{self._store.resource_version} (was the data directory reset?); relist"
                )
            self._store.event_page(since_rv, since_rv, 0)  # Gone now if compacted past it
            initial = self._backlog(wanted, since_rv, self._store.resource_version)
        sub = Subscription(self, wanted, initial, self._store.resource_version, self._limit)
        self._subs.add(sub)
        return sub

    def _snapshot(self, wanted: frozenset[str]) -> Iterator[StoredEvent]:
        """Every current object as ADDED, decoded one at a time as the watcher takes them:
        an unread watch holds references to the stored texts, not decoded copies."""
        texts = [
            (kind, text)
            for kind in sorted(wanted or set(self._store.kinds()))
            for text in self._store.list_texts(kind)
        ]
        for kind, text in texts:
            obj = json.loads(text)
            yield StoredEvent(int(obj["metadata"]["resourceVersion"]), "ADDED", kind, obj)

    def _backlog(self, wanted: frozenset[str], since: int, until: int) -> Iterator[StoredEvent]:
        """Events in (since, until] read a page at a time (Gone if compacted meanwhile)."""
        after = since
        while after < until:
            page = self._store.event_page(after, until, BACKLOG_PAGE)
            if not page:
                return
            for event in page:
                if not wanted or event.kind in wanted:
                    yield event
            after = page[-1].rv

    @property
    def resource_version(self) -> int:
        """The store's latest resourceVersion (for watch bookmarks)."""
        return self._store.resource_version

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def close(self) -> None:
        """End every subscription (shutdown) and detach from the store."""
        for sub in list(self._subs):
            sub.close()
        self._store.remove_listener(self._on_event)

    def note_delivered(self) -> None:
        self._delivered += 1

    def note_overflow(self, dropped: int) -> None:
        self._overflowed += 1
        self._dropped += dropped

    def statistics(self) -> HubStatistics:
        return HubStatistics(len(self._subs), self._delivered, self._overflowed, self._dropped)

    def _on_event(self, event: StoredEvent) -> None:
        for sub in list(self._subs):
            if sub.wants(event.kind):
                sub.push(event)
