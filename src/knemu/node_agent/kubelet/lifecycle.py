"""``POST /lifecycle``: process chaos a node does to itself, for the web console.

`knemu chaos kill-node` and `stop-node` act from outside, through whatever runs the node (the
docker engine, or `knemu up`'s process groups).  The api-server's console holds neither, so it
asks the agent:

* ``{"action": "kill"}``: die now, as SIGKILL would, without draining: the agent's process
  group (the agent and its pods' processes) under `knemu up`, or, when the agent is the
  container's init (PID 1, which ignores signals from inside its namespace), by exiting, so
  the container stops with everything in it.
* ``{"action": "freeze", "seconds": S}``: stop for S seconds (1-300): the event loop is held,
  so the node forwards nothing, renews no lease and answers nothing, as with SIGSTOP, then
  thaws by itself (nothing outside could send the SIGCONT).

The reply is sent first; the action runs a moment later.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

from aiohttp import web

from knemu.errors import LocalError
from knemu.node_agent.kubelet.responses import error_response

ACT_AFTER_S = 0.1  # time for the reply to leave
MAX_FREEZE_S = 300.0


def kill_self() -> None:
    pid = os.getpid()
    if pid == 1:
        os._exit(137)  # the container's init: its exit takes the container down
    if os.getpgid(0) == pid:
        os.killpg(pid, signal.SIGKILL)  # a process group of our own (knemu up)
    os.kill(pid, signal.SIGKILL)


async def serve_lifecycle(request: web.Request, node: str) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        body = None
    action = body.get("action") if isinstance(body, dict) else None
    loop = asyncio.get_running_loop()
    if action == "kill":
        loop.call_later(ACT_AFTER_S, kill_self)
        return web.json_response({"node": node, "action": "kill"}, status=202)
    if action == "freeze":
        seconds = body.get("seconds") if isinstance(body, dict) else None
        if not isinstance(seconds, int | float) or not 1 <= seconds <= MAX_FREEZE_S:
            return error_response(LocalError(f"POST /lifecycle freeze: seconds must be a "
                                             f"number from 1 to {MAX_FREEZE_S:.0f}"))  # fmt: skip
        # Holding the loop on purpose: that is what a frozen node is.
        loop.call_later(ACT_AFTER_S, time.sleep, float(seconds))
        return web.json_response({"node": node, "action": "freeze", "seconds": seconds},
                                 status=202)  # fmt: skip
    return error_response(LocalError('POST /lifecycle: the body must be {"action": "kill"} or '
                                     '{"action": "freeze", "seconds": S}'))  # fmt: skip
