"""The controller's way to the api-server: in-cluster configuration and list+watch over REST.

In-cluster configuration as client-go's ``rest.InClusterConfig``: the address from
``KUBERNETES_SERVICE_HOST``/``KUBERNETES_SERVICE_PORT``, and, when the kubelet mounted them,
the service account's token and CA under /var/run/secrets/kubernetes.io/serviceaccount/
(then HTTPS, the CA verifying the server, the token as a Bearer credential; without a CA the
api-server is taken to speak plain HTTP, as knemu's does until it serves TLS).  ``--apiserver
URL`` overrides the address for runs outside a pod.

``Informer`` keeps a cache of one resource the way client-go's reflector does: list, then
watch from the list's resourceVersion, and list again when the watch ends or the version is
too old (410 Gone).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from knemu.errors import ConfigError, RemoteError

log = logging.getLogger(__name__)
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
RETRY_S = 1.0
WATCH_TIMEOUT_S = 300  # the server ends each watch after this; the informer starts another


@dataclass(frozen=True)
class ClusterConfig:
    server: str  # http(s)://host:port
    token: str = ""
    ca_file: str = ""

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def ssl_context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None


def in_cluster_config(
    env: Mapping[str, str], override: str = "", sa_dir: Path = SERVICE_ACCOUNT_DIR
) -> ClusterConfig:
    token_file, ca_file = sa_dir / "token", sa_dir / "ca.crt"
    token = token_file.read_text().strip() if token_file.is_file() else ""
    ca = str(ca_file) if ca_file.is_file() else ""
    if override:
        return ClusterConfig(override.rstrip("/"), token, ca)
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise ConfigError(
            "not running in a pod with in-cluster configuration: KUBERNETES_SERVICE_HOST and "
            "KUBERNETES_SERVICE_PORT must be set (or pass --apiserver URL)"
        )
    if ":" in host:
        host = f"[{host}]"
    return ClusterConfig(f"{'https' if ca else 'http'}://{host}:{port}", token, ca)


class ApiClient:
    def __init__(self, config: ClusterConfig, session: aiohttp.ClientSession) -> None:
        self.config = config
        self._http = session
        self._ssl: ssl.SSLContext | bool = config.ssl_context() or True

    async def get(self, path: str, **params: str) -> dict[str, Any]:
        async with self._http.get(self.config.server + path, params=params, ssl=self._ssl,
                                  headers=self.config.headers()) as reply:  # fmt: skip
            body: dict[str, Any] = await reply.json(content_type=None)
            if reply.status != 200:
                raise ApiError(reply.status, str(body.get("message", body)))
            return body

    async def patch_status(self, path: str, status: dict[str, Any]) -> None:
        headers = {**self.config.headers(), "Content-Type": "application/merge-patch+json"}
        body = json.dumps({"status": status})
        async with self._http.patch(self.config.server + path + "/status", data=body,
                                    headers=headers, ssl=self._ssl) as reply:  # fmt: skip
            if reply.status != 200:
                raise ApiError(reply.status, await reply.text())

    async def watch(self, path: str, version: str, on_event: Callable[[str, Any], None]) -> None:
        params = {"watch": "1", "resourceVersion": version, "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(WATCH_TIMEOUT_S)}  # fmt: skip
        timeout = aiohttp.ClientTimeout(total=None, sock_read=WATCH_TIMEOUT_S + 30)
        url, headers = self.config.server + path, self.config.headers()
        async with self._http.get(
            url, params=params, ssl=self._ssl, headers=headers, timeout=timeout
        ) as reply:
            if reply.status != 200:
                raise ApiError(reply.status, await reply.text())
            async for line in reply.content:
                if line.strip():
                    event = json.loads(line)
                    on_event(str(event.get("type")), event.get("object") or {})


class ApiError(RemoteError):
    """The api-server refused or failed a request (its HTTP status kept)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"api-server answered {status}: {message}")
        self.status = status


class Informer:
    """The objects of one resource path (all namespaces), kept current; ``on_change`` is
    called after every change."""

    def __init__(self, client: ApiClient, path: str, on_change: Callable[[], None]) -> None:
        self.path = path
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.synced = asyncio.Event()
        self._client, self._on_change = client, on_change

    async def run(self) -> None:
        while True:
            try:
                listed = await self._client.get(self.path)
                self.objects = {_key(o): o for o in listed.get("items") or []}
                self.synced.set()
                self._on_change()
                version = str((listed.get("metadata") or {}).get("resourceVersion", ""))
                await self._client.watch(self.path, version, self._apply)
            except (aiohttp.ClientError, ApiError, ValueError, TimeoutError) as exc:
                log.warning("watch %s: %s (listing again)", self.path, exc)
                await asyncio.sleep(RETRY_S)

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        if kind == "ERROR":
            raise ApiError(int(obj.get("code") or 500), str(obj.get("message", "")))
        if kind == "BOOKMARK":
            return
        if kind == "DELETED":
            self.objects.pop(_key(obj), None)
        else:
            self.objects[_key(obj)] = obj
        self._on_change()


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")
