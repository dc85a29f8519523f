"""A bounded log of flow events with subscribers (``GET /flows?follow=true``), sans-I/O.

``FlowLog.append`` is meant to be the router's ``flow_sink``: it keeps the last ``capacity``
events in a ring buffer (the oldest are overwritten and counted, like Hubble's ring) and hands
each event to the subscribers.  An asyncio adapter subscribes with a callback that puts events
in its own bounded queue.  A subscriber that raises is removed and counted, so a broken reader
can never break the router's packet loop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from knemu.node_agent.events import FlowEvent

Subscriber = Callable[[FlowEvent], None]
Match = Callable[[FlowEvent], bool]


class FlowLog:
    """The ring and its subscribers.  ``on_watch(True)`` is called when the first subscriber
    arrives and ``on_watch(False)`` when the last leaves: the agent records forwarded packets
    only while someone watches (see ``Router.set_forward_events``)."""

    def __init__(
        self, capacity: int = 4096, on_watch: Callable[[bool], None] | None = None
    ) -> None:
        if capacity < 1:
            raise ValueError(f"FlowLog capacity {capacity} must be at least 1")
        self._ring: deque[FlowEvent] = deque(maxlen=capacity)
        self._subscribers: dict[int, tuple[Subscriber, Match | None]] = {}
        self._next_token = 1
        self.seen = 0
        self.overwritten = 0
        self.subscriber_errors = 0
        self.on_watch = on_watch

    def __len__(self) -> int:
        return len(self._ring)

    def append(self, event: FlowEvent) -> None:
        """Record one event and pass it to matching subscribers."""
        if len(self._ring) == self._ring.maxlen:
            self.overwritten += 1
        self._ring.append(event)
        self.seen += 1
        broken = []
        # A snapshot: a callback may unsubscribe (itself or another) while we iterate.
        for token, (callback, match) in list(self._subscribers.items()):
            if match is not None and not match(event):
                continue
            try:
                callback(event)
            except Exception:  # a reader's bug must not reach the packet loop
                broken.append(token)
        for token in broken:
            self.subscriber_errors += 1
            self._subscribers.pop(token, None)
        if broken:
            self._watchers_left()

    def recent(self, limit: int | None = None, match: Match | None = None) -> list[FlowEvent]:
        """The newest events (oldest first), at most ``limit``, optionally filtered."""
        items = [e for e in self._ring if match is None or match(e)]
        return items if limit is None else items[-limit:] if limit > 0 else []

    def subscribe(self, callback: Subscriber, match: Match | None = None) -> int:
        """Call ``callback`` for every later event (that ``match`` accepts); returns a token."""
        token = self._next_token
        self._next_token += 1
        self._subscribers[token] = (callback, match)
        if len(self._subscribers) == 1 and self.on_watch is not None:
            self.on_watch(True)
        return token

    def unsubscribe(self, token: int) -> None:
        if self._subscribers.pop(token, None) is not None:
            self._watchers_left()

    def _watchers_left(self) -> None:
        if not self._subscribers and self.on_watch is not None:
            self.on_watch(False)

    def statistics(self) -> dict[str, int]:
        return {
            "flow_events": self.seen,
            "flow_events_overwritten": self.overwritten,
            "flow_subscribers": len(self._subscribers),
            "flow_subscriber_errors": self.subscriber_errors,
        }
