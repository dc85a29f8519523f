"""The console's client of the node agents' HTTP API (the kubelet role).

The console reaches agents the way the api-server's node proxy does
(``knemu.apiserver.rest.proxy``): at the InternalIP and kubelet port of the Node object.
Every call has a short timeout, so a dead or frozen node shows as unreachable instead of
hanging the page.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from knemu.apiserver.rest.proxy import kubelet_address
from knemu.apiserver.storage.store import Store
from knemu.errors import KnemuError, NotFound, Unavailable

Obj = dict[str, Any]
TIMEOUT_S = 3.0


class AgentError(KnemuError):
    """An agent answered with an error status; its message is passed on."""

    reason = "BadRequest"


class AgentClient:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._session: aiohttp.ClientSession | None = None

    def nodes(self) -> list[str]:
        return sorted(n["metadata"]["name"] for n in self.store.list("Node"))

    def base(self, node: str) -> str:
        obj = self.store.get("Node", "", node)
        if obj is None:
            raise NotFound(f'node "{node}" not found: see `knemu get nodes`')
        ip, port = kubelet_address(obj)
        return f"http://{ip}:{port}"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(
        self, method: str, node: str, path: str, body: Any = None, params: Any = None
    ) -> Any:
        """JSON (or NDJSON, as a list) from ``path`` on ``node``'s agent."""
        url = self.base(node) + path
        try:
            async with self._client().request(method, url, json=body, params=params) as resp:
                raw = await resp.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise Unavailable(f'node "{node}" agent is unreachable ({exc or type(exc).__name__}); '
                              "it may be dead or frozen") from None  # fmt: skip
        text = raw.decode(errors="replace")
        if resp.status >= 400:
            try:
                message = json.loads(text).get("message", text)
            except (ValueError, AttributeError):
                message = text
            err = AgentError(f"node {node}: {message}")
            err.http_status = resp.status
            raise err
        if resp.content_type == "application/x-ndjson":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return json.loads(text) if text.strip() else {}
