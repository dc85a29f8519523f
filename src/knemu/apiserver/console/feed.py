"""The console's live feed: server-sent events built on the api-server's watch hub.

Each page opens ``GET /console/api/events`` (an ``EventSource``) and receives JSON messages:
``RESET`` (forget what you drew), one ``ADDED`` per current Node, Pod, Service and
EndpointSlice (``model.feed_message`` summaries), ``SYNCED``, then ``ADDED``/``MODIFIED``/
``DELETED`` as the store changes, and ``IMPAIRMENTS`` whenever the nodes' chaos state
changes (``{"nodes": {name: [impairment...] | null}}``, null for an agent that does not
answer).  Impairments live in the agents, not in the store, so the feed polls every node's
``/chaos`` every POLL_S while at least one page is open, and at once after a console chaos
action.

Memory stays bounded: a page's queue holds at most QUEUE_MESSAGES; a page that falls behind
gets ``RELIST`` and its stream ends (the browser's EventSource reconnects and starts over
from a snapshot), the same contract as a Kubernetes watch that has to relist.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from typing import Any

from aiohttp import web

from knemu.apiserver.console.agents import AgentClient
from knemu.apiserver.console.model import KINDS, feed_message
from knemu.apiserver.storage.watch_hub import WatchHub
from knemu.errors import Gone, KnemuError

Obj = dict[str, Any]
POLL_S = 2.0
HEARTBEAT_S = 15.0  # an SSE comment this often, so a vanished page is noticed
QUEUE_MESSAGES = 20_000
MAX_PAGES = 64


class _Page:
    """One open page's bounded queue."""

    def __init__(self, limit: int) -> None:
        self.queue: deque[Obj] = deque()
        self.limit = limit
        self.overflowed = False
        self.wake = asyncio.Event()

    def put(self, message: Obj) -> None:
        if len(self.queue) >= self.limit:
            self.overflowed = True
            self.queue.clear()
        elif not self.overflowed:
            self.queue.append(message)
        self.wake.set()


class Feed:
    def __init__(self, hub: WatchHub, agents: AgentClient, poll_s: float = POLL_S) -> None:
        self.hub = hub
        self.agents = agents
        self.poll_s = poll_s
        self.impairments: dict[str, list[Obj] | None] = {}
        self._pages: set[_Page] = set()
        self._poller: asyncio.Task[None] | None = None
        self._poke = asyncio.Event()

    def poke(self) -> None:
        """Poll the agents' impairments now (a chaos action just changed them)."""
        self._poke.set()

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller

    async def serve(self, request: web.Request) -> web.StreamResponse:
        if len(self._pages) >= MAX_PAGES:
            raise web.HTTPTooManyRequests(text=f"{MAX_PAGES} console pages are open already")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})  # fmt: skip
        await resp.prepare(request)
        sub = self.hub.subscribe(set(KINDS), 0)
        page = _Page(QUEUE_MESSAGES)
        page.put({"type": "RESET"})
        for event in sub.initial:
            page.put(feed_message(event.type, event.kind, event.obj))
        page.put({"type": "SYNCED"})
        page.put({"type": "IMPAIRMENTS", "nodes": self.impairments})
        self._pages.add(page)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll(), name="console-impairments")
        pump = asyncio.create_task(self._pump(sub, page), name="console-watch")
        try:
            await self._write(resp, page)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            pump.cancel()
            sub.close()
            self._pages.discard(page)
        return resp

    async def _write(self, resp: web.StreamResponse, page: _Page) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(page.wake.wait(), HEARTBEAT_S)
            page.wake.clear()
            if page.overflowed:
                await resp.write(_sse({"type": "RELIST"}))
                return
            if not page.queue:
                await resp.write(b": keep-alive\n\n")
                continue
            chunk = b"".join(_sse(m) for m in page.queue)
            page.queue.clear()
            await resp.write(chunk)

    @staticmethod
    async def _pump(sub: Any, page: _Page) -> None:
        try:
            while True:
                event = await sub.next()
                page.put(feed_message(event.type, event.kind, event.obj))
        except Gone:
            page.overflowed = True
            page.wake.set()

    async def _poll(self) -> None:
        while self._pages:
            nodes = self.agents.nodes()
            replies = await asyncio.gather(*(self._impairments_of(n) for n in nodes))
            current = dict(zip(nodes, replies, strict=True))
            if current != self.impairments:
                self.impairments = current
                for page in self._pages:
                    page.put({"type": "IMPAIRMENTS", "nodes": current})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self.poll_s)
            self._poke.clear()

    async def _impairments_of(self, node: str) -> list[Obj] | None:
        try:
            reply = await self.agents.call("GET", node, "/chaos")
        except KnemuError:
            return None
        items = reply.get("impairments") if isinstance(reply, dict) else None
        return items if isinstance(items, list) else []


def _sse(message: Obj) -> bytes:
    """One server-sent event (https://html.spec.whatwg.org/multipage/server-sent-events.html);
    JSON never contains a raw newline, so one data line carries it."""
    return b"data: " + json.dumps(message, separators=(",", ":")).encode() + b"\n\n"
