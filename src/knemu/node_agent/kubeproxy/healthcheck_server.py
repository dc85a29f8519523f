"""The sockets of kube-proxy's service healthchecks: one TCP listener per healthCheckNodePort on
the node's IP, answering from ``healthcheck.reply_to`` with the router's count of local
endpoints at the time of the request.  Listeners follow the desired ports (``apply``)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable

from knemu.node_agent.kubeproxy.healthcheck import MAX_HEAD_BYTES, reply_to

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 5.0  # a client that sends no request head in this long is dropped


class HealthCheckServers:
    """``healthCheckNodePort`` -> listener; ``count(service_key)`` gives localEndpoints."""

    def __init__(self, listen_ip: str, count: Callable[[str], int]) -> None:
        self._ip = listen_ip
        self._count = count
        self._servers: dict[int, tuple[str, asyncio.Server]] = {}
        self.bind_errors: dict[int, str] = {}

    @property
    def ports(self) -> dict[int, str]:
        return {port: key for port, (key, _) in self._servers.items()}

    async def apply(self, desired: dict[int, str]) -> None:
        """Open listeners for new ports, close those no longer wanted (or re-keyed)."""
        for port, (key, server) in list(self._servers.items()):
            if desired.get(port) != key:
                server.close()
                del self._servers[port]
        for port, key in sorted(desired.items()):
            if port in self._servers:
                continue
            try:
                server = await asyncio.start_server(
                    functools.partial(self._serve, key=key), self._ip, port, limit=MAX_HEAD_BYTES
                )
            except OSError as exc:
                self.bind_errors[port] = str(exc)
                log.warning("healthCheckNodePort %s:%d for %s: %s", self._ip, port, key, exc)
                continue
            self.bind_errors.pop(port, None)
            self._servers[port] = (key, server)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     key: str) -> None:  # fmt: skip
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
        except asyncio.LimitOverrunError:
            head = b"x" * (MAX_HEAD_BYTES + 1)
        except (TimeoutError, asyncio.IncompleteReadError, OSError):
            writer.close()
            return
        writer.write(reply_to(head, key, self._count(key)).encode())
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()

    async def close(self) -> None:
        await self.apply({})
