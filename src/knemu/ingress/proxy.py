"""The HTTP/1.1 reverse proxy (aiohttp): asks the routing core where a request goes and
forwards it to one of the backend's endpoints, as nginx's ``proxy_pass`` does.

The answers nginx gives when it cannot forward are kept, bodies included: 404 when no rule and
no default backend match, 503 when the backend has no ready endpoint, 502 when the endpoint
refuses or breaks the connection, 504 when it does not answer in time.  Each backend's
endpoints are taken in turn (nginx's round robin per upstream).  Hop-by-hop headers (RFC 9110
section 7.6.1) are not forwarded.
TLS: one SSLContext per Secret, chosen by the client's SNI name (``TlsContexts``).
"""

from __future__ import annotations

import itertools
import logging
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from knemu.ingress import routing

log = logging.getLogger(__name__)
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Content-Length",
    )
)
UPSTREAM_TIMEOUT_S = 60.0  # nginx proxy_read_timeout
CONNECT_TIMEOUT_S = 5.0  # nginx-ingress proxy-connect-timeout
_REASONS = {
    404: "404 Not Found",
    502: "502 Bad Gateway",
    503: "503 Service Temporarily Unavailable",
    504: "504 Gateway Time-out",
}


def nginx_error(status: int) -> web.Response:
    title = _REASONS[status]
    body = (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n")  # fmt: skip
    return web.Response(status=status, text=body, content_type="text/html")


class View:
    """What the proxy reads on each request: the current table, Services and slices."""

    def __init__(self) -> None:
        self.table = routing.RoutingTable()
        self.services: dict[routing.Key, dict[str, Any]] = {}
        self.slices: list[dict[str, Any]] = []


class ReverseProxy:
    def __init__(self, view: View, session: aiohttp.ClientSession) -> None:
        self._view = view
        self._http = session
        self._turns: dict[routing.Backend, itertools.count[int]] = {}  # round robin per backend

    async def handle(self, request: web.Request) -> web.StreamResponse:
        view = self._view
        route = view.table.route(request.host, request.path)
        if route.backend is None:
            return nginx_error(404)
        found = routing.endpoints(route.backend, view.services, view.slices)
        if isinstance(found, routing.Unavailable):
            log.info("%s %s: 503 (%s)", request.host, request.path, found.reason)
            return nginx_error(503)
        turn = self._turns.setdefault(route.backend, itertools.count())
        address, port = found[next(turn) % len(found)]
        return await self._forward(request, address, port)

    async def _forward(self, request: web.Request, address: str, port: int) -> web.StreamResponse:
        local = request.transport.get_extra_info("sockname") if request.transport else None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Host"] = request.host
        headers.update(routing.forwarded_headers(request.headers, request.remote or "",
                                                 request.scheme, request.host,
                                                 int(local[1]) if local else 0))  # fmt: skip
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S,
                                        sock_read=UPSTREAM_TIMEOUT_S)  # fmt: skip
        url = f"http://{address}:{port}{request.rel_url}"
        body = request.content if request.body_exists else None
        try:
            async with self._http.request(
                request.method,
                url,
                headers=headers,
                data=body,
                timeout=timeout,
                allow_redirects=False,
            ) as upstream:
                reply = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for key, value in upstream.headers.items():
                    if key.lower() not in HOP_BY_HOP:
                        reply.headers.add(key, value)
                await reply.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await reply.write(chunk)
                await reply.write_eof()
                return reply
        except TimeoutError:
            log.warning("upstream %s:%d timed out (%s)", address, port, request.path)
            return nginx_error(504)
        except aiohttp.ClientError as exc:
            log.warning("upstream %s:%d failed: %s", address, port, exc)
            return nginx_error(502)


class TlsContexts:
    """A server SSLContext whose SNI callback hands each handshake the context of the Secret
    the routing table picks for that name (``RoutingTable.secret_for``)."""

    def __init__(self, table: Callable[[], routing.RoutingTable]) -> None:
        self._table = table
        self._by_secret: dict[routing.Key, ssl.SSLContext] = {}
        self._dir = tempfile.TemporaryDirectory(prefix="knemu-ingress-tls-")
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.sni_callback = self._pick

    def update(self, secrets: dict[routing.Key, dict[str, Any]]) -> None:
        contexts: dict[routing.Key, ssl.SSLContext] = {}
        for key in self._table().secrets():
            pair = routing.tls_pair(secrets.get(key) or {})
            if pair is None:
                continue
            try:
                contexts[key] = self._load(key, pair)
            except (ssl.SSLError, OSError) as exc:
                log.warning("TLS secret %s/%s unusable: %s", key[0], key[1], exc)
        self._by_secret = contexts

    def _load(self, key: routing.Key, pair: tuple[bytes, bytes]) -> ssl.SSLContext:
        base = Path(self._dir.name) / f"{key[0]}_{key[1]}"
        cert, private = base.with_suffix(".crt"), base.with_suffix(".key")
        cert.write_bytes(pair[0])
        private.touch(mode=0o600)
        private.write_bytes(pair[1])
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, private)
        return ctx

    def _pick(self, sock: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> int | None:
        secret = self._table().secret_for(name)
        ctx = self._by_secret.get(secret) if secret else None
        if ctx is None:
            ctx = next(iter(self._by_secret.values()), None)
        if ctx is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        sock.context = ctx
        return None

    def close(self) -> None:
        self._dir.cleanup()
