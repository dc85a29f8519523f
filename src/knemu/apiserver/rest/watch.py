"""``?watch=true``: a newline-delimited stream of ``{"type", "object"}`` watch events.

As "Efficient detection of changes" (https://kubernetes.io/docs/reference/using-api/
api-concepts/#efficient-detection-of-changes) describes:

* ``resourceVersion`` unset or "0": every current object as ADDED, then live changes;
  ``resourceVersion=N``: every change after N, then live changes.
* A resourceVersion older than the kept history, or a watcher too slow for its bounded queue,
  gets one ``ERROR`` event whose object is a ``Status`` with code 410 (reason Expired), then
  the stream ends; the client lists again, as client-go's reflector does.
* With a label or field selector, an object that stops matching is sent as DELETED and one
  that starts matching as ADDED, like the Kubernetes watch cache.
* ``timeoutSeconds`` ends the stream cleanly after that long.
* A client that reads nothing for ``WRITE_TIMEOUT_S`` (its socket buffers full) is
  disconnected; before that, its bounded queue has overflowed and been freed.
* ``allowWatchBookmarks=true``: when idle, a BOOKMARK event carries the latest resourceVersion
  so a client that reconnects later resumes from there instead of from an old, compacted one.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from knemu.apiserver.rest.status import BadRequest, status_failure
from knemu.apiserver.storage.store import StoredEvent
from knemu.apiserver.storage.watch_hub import Subscription, WatchHub
from knemu.errors import Gone, KnemuError

Obj = dict[str, Any]
WRITE_TIMEOUT_S = 30.0  # a watch client that reads nothing for this long is disconnected


def _always(obj: Obj) -> bool:
    return True


@dataclass
class WatchFilter:
    """Which objects a watcher sees; tracks what it has seen to send selector transitions."""

    namespace: str | None = None
    label_match: Callable[[Obj], bool] = _always
    field_match: Callable[[Obj], bool] = _always
    visible: set[tuple[str, str]] = field(default_factory=set)
    complete: bool = False  # the visible set is complete (the watch started from a snapshot)

    def matches(self, obj: Obj) -> bool:
        meta = obj.get("metadata", {})
        if self.namespace is not None and meta.get("namespace", "") != self.namespace:
            return False
        return self.label_match(obj) and self.field_match(obj)

    def translate(self, event: StoredEvent) -> str | None:
        """The event type this watcher should see for ``event``, or None to skip it."""
        meta = event.obj.get("metadata", {})
        key = (meta.get("namespace", ""), meta.get("name", ""))
        seen = key in self.visible
        if event.type == "DELETED":
            self.visible.discard(key)
            return "DELETED" if seen or self.matches(event.obj) else None
        if self.matches(event.obj):
            self.visible.add(key)
            return (
                "ADDED" if event.type == "MODIFIED" and not seen and self.complete else event.type
            )
        if seen:
            self.visible.discard(key)
            return "DELETED"  # stopped matching the selector
        return None


def watch_event_line(etype: str, obj: Obj) -> bytes:
    return json.dumps({"type": etype, "object": obj}, separators=(",", ":")).encode() + b"\n"


def _error_line(err: KnemuError) -> bytes:
    status = status_failure(err)
    if isinstance(err, Gone):
        status["code"] = 410
    return watch_event_line("ERROR", status)


def _since(request: web.Request) -> int:
    raw = request.query.get("resourceVersion", "")
    if raw in ("", "0"):
        return 0
    if not raw.isdigit():
        raise BadRequest(f"resourceVersion {raw!r} is not a number: use one from a list or watch")
    return int(raw)


def _timeout(request: web.Request) -> float | None:
    raw = request.query.get("timeoutSeconds", "")
    if not raw:
        return None
    if not raw.isdigit():
        raise BadRequest(f"timeoutSeconds {raw!r} is not a whole number of seconds")
    return float(raw)


@dataclass
class _Stream:
    """One open watch response and what it needs to keep going."""

    request: web.Request
    resp: web.StreamResponse
    sub: Subscription
    filt: WatchFilter
    bookmark: Obj | None  # allowWatchBookmarks: the object BOOKMARK events carry
    bookmarked_rv: int = 0
    transform: Callable[[Obj], Obj] | None = None  # e.g. into a Table (tables.watch_transform)

    async def send(self, event: StoredEvent) -> None:
        etype = self.filt.translate(event)
        if etype is not None:
            obj = self.transform(event.obj) if self.transform else event.obj
            await self.write(watch_event_line(etype, obj))

    async def write(self, data: bytes) -> None:
        """Write, but a client that reads nothing for WRITE_TIMEOUT_S is cut off: its
        connection is aborted, so neither memory nor the handler waits on it forever."""
        try:
            await asyncio.wait_for(self.resp.write(data), WRITE_TIMEOUT_S)
        except TimeoutError:
            transport = self.request.transport
            if transport is not None:
                transport.abort()
            raise ConnectionResetError("watch client stopped reading") from None

    async def idle(self, hub: WatchHub) -> bool:
        """Nothing happened for a while: False if the client left; else maybe a BOOKMARK
        so the client can resume from a recent resourceVersion (watch bookmarks, KEP 956)."""
        transport = self.request.transport
        if transport is None or transport.is_closing():
            return False
        rv = hub.resource_version
        if self.bookmark is not None and rv != self.bookmarked_rv:
            self.bookmarked_rv = rv
            obj = dict(self.bookmark, metadata={"resourceVersion": str(rv)})
            await self.write(watch_event_line("BOOKMARK", obj))
        return True


async def serve_watch(
    request: web.Request,
    hub: WatchHub,
    kind: str,
    api_version: str,
    filt: WatchFilter,
    check_s: float,
    transform: Callable[[Obj], Obj] | None = None,
) -> web.StreamResponse:
    """Stream watch events for ``kind`` until timeout, disconnect, shutdown or 410."""
    since, timeout = _since(request), _timeout(request)
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    resp.enable_chunked_encoding()
    try:
        sub = hub.subscribe({kind}, since)
    except Gone as err:
        await resp.prepare(request)
        await resp.write(_error_line(err))
        await resp.write_eof()
        return resp
    wants_bookmarks = request.query.get("allowWatchBookmarks") in ("true", "1")
    bookmark = {"kind": kind, "apiVersion": api_version} if wants_bookmarks else None
    stream = _Stream(request, resp, sub, filt, bookmark, sub.synced_rv, transform=transform)
    try:
        await resp.prepare(request)
        filt.complete = since == 0
        try:
            for event in sub.initial:  # decoded one by one: an unread watch holds one
                await stream.send(event)
        except Gone as err:  # the backlog was compacted under a slow reader: relist
            await stream.write(_error_line(err))
            await resp.write_eof()
            return resp
        await _pump(stream, hub, timeout, check_s)
        await resp.write_eof()
    except ConnectionResetError:
        pass  # the client went away; nothing to tell it
    finally:
        sub.close()
    return resp


async def _pump(stream: _Stream, hub: WatchHub, timeout: float | None, check_s: float) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        wait = check_s
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
            if wait <= 0:
                return
        try:
            event = await asyncio.wait_for(stream.sub.next(), wait)
        except TimeoutError:
            if not await stream.idle(hub):
                return
            continue
        except Gone as err:
            if not stream.sub.closed:  # overflow: tell the client to relist; shutdown: end
                await stream.write(_error_line(err))
            return
        await stream.send(event)
