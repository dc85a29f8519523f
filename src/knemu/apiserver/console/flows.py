"""``GET /console/api/flows?node=A&node=B``: the followed flows of several nodes in one stream.

A browser opens at most six HTTP/1.1 connections to one server, and the page's live feed
holds one already: following each node's ``/flows`` separately would starve the page's other
requests on a cluster of five nodes or more.  This merges the agents' ``/flows?follow=true``
NDJSON streams into one, line by line, as ``knemu flows -f`` merges them on the terminal.
Each line is passed through unchanged; a node that cannot be reached adds one line
``{"error": "..."}``.  Lines wait in a bounded queue: a page slower than the flows loses lines
(the router, which records flows only while someone follows, is never held up).
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp
from aiohttp import web

from knemu.apiserver.console.agents import AgentClient
from knemu.errors import KnemuError, LocalError

QUEUE_LINES = 5000
MAX_NODES = 64
HISTORY = "20"  # recent events per node before following


async def _follow(
    session: aiohttp.ClientSession, agents: AgentClient, node: str, out: asyncio.Queue[bytes]
) -> None:
    def offer(line: bytes) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            out.put_nowait(line)

    try:
        url = agents.base(node) + "/flows"
        params = {"follow": "true", "limit": HISTORY}
        async with session.get(url, params=params) as resp:
            if resp.status != 200:
                raise LocalError(f"node {node} answered HTTP {resp.status}")
            async for line in resp.content:
                if line.strip():
                    offer(line if line.endswith(b"\n") else line + b"\n")
    except (KnemuError, aiohttp.ClientError, OSError, TimeoutError) as exc:
        message = exc.message if isinstance(exc, KnemuError) else str(exc) or type(exc).__name__
        offer(json.dumps({"error": f"flows from {node}: {message}"}).encode() + b"\n")


async def serve_flows(request: web.Request, agents: AgentClient) -> web.StreamResponse:
    nodes = sorted(set(request.query.getall("node", [])))
    if not nodes or len(nodes) > MAX_NODES:
        raise web.HTTPBadRequest(text=f"name 1 to {MAX_NODES} nodes: ?node=NAME&node=NAME")
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson",
                                       "Cache-Control": "no-cache"})  # fmt: skip
    await resp.prepare(request)
    queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_LINES)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=3.0)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        tasks = [asyncio.create_task(_follow(session, agents, n, queue), name=f"flows-{n}")
                 for n in nodes]  # fmt: skip
        try:
            while True:
                lines = [await queue.get()]
                while not queue.empty():
                    lines.append(queue.get_nowait())
                await resp.write(b"".join(lines))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return resp
