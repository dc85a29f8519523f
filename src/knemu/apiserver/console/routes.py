"""The console's HTTP surface on the api-server's REST application.

* ``GET /console/``: the single page; ``GET /console/static/NAME``: its script, style and
  tour data, shipped in the package (no CDN: the page works without external network).
* ``GET /console/api/events``: the live feed (``feed``).
* ``GET /console/api/flows?node=...``: the chosen nodes' followed flows, merged (``flows``).
* ``POST /console/api/trace`` and ``POST /console/api/chaos``: ``actions``.
* ``GET /console/login``: the sign-in page (a browser without credentials is sent there);
  ``POST /console/login`` with ``{"token": ...}`` checks the token and sets the session
  cookie (HttpOnly, Secure, SameSite=Strict); ``POST /console/logout`` clears it.  The
  console is for users RBAC lets reach ``/console/*`` (cluster-admin).
* Everything else the page needs it reads from the REST API itself (captures through the node
  proxy, tours applied with server-side apply), as any client would.

Every socket is reachable by someone untrusted, and a browser visiting another site could be
made to send requests here: the page is served with a Content-Security-Policy allowing only
this origin and no inline script, and the console's POSTs must carry a JSON body (which a
cross-site form cannot send without a CORS preflight this server never grants) and, when the
browser names one, an ``Origin`` equal to this server.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

from aiohttp import web

from knemu.apiserver.console import actions
from knemu.apiserver.console.agents import AgentClient
from knemu.apiserver.console.feed import Feed
from knemu.apiserver.console.flows import serve_flows
from knemu.apiserver.rest.access import SESSION_COOKIE, Access
from knemu.apiserver.storage.store import Store
from knemu.apiserver.storage.watch_hub import WatchHub
from knemu.errors import KnemuError, LocalError

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
                ".json": "application/json", ".svg": "image/svg+xml"}  # fmt: skip
_STATIC_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{0,63}")
MAX_BODY_BYTES = 64 * 1024


class Forbidden(LocalError):
    http_status = 403
    reason = "Forbidden"


def static_file(name: str) -> tuple[bytes, str] | None:
    """(bytes, content type) of a shipped asset, or None: only plain names in ``static/``."""
    suffix = name[name.rfind(".") :] if "." in name else ""
    if not _STATIC_NAME.fullmatch(name) or ".." in name or suffix not in STATIC_TYPES:
        return None
    item = resources.files("knemu.apiserver.console").joinpath("static", name)
    if not item.is_file():
        return None
    return item.read_bytes(), STATIC_TYPES[suffix]


def check_same_origin(request: web.Request) -> None:
    if request.content_type != "application/json":
        raise Forbidden("console actions take a JSON body (Content-Type: application/json)")
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        raise Forbidden(f"console actions are accepted from this server's own page only, not "
                        f"from {origin}")  # fmt: skip


def _failure(exc: KnemuError) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": exc.message,
            "reason": exc.reason, "code": exc.http_status}  # fmt: skip
    return web.json_response(body, status=exc.http_status)


class Console:
    def __init__(self, store: Store, hub: WatchHub, access: Access) -> None:
        self.store = store
        self.access = access
        self.agents = AgentClient(store)
        self.feed = Feed(hub, self.agents)

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/console", self._redirect)
        r.add_get("/console/", self._index)
        r.add_get("/console/login", self._login_page)
        r.add_post("/console/login", self._login)
        r.add_post("/console/logout", self._logout)
        r.add_get("/console/static/{name}", self._static)
        r.add_get("/console/api/events", self.feed.serve)
        r.add_get("/console/api/flows", self._flows)
        r.add_post("/console/api/trace", self._trace)
        r.add_post("/console/api/chaos", self._chaos)
        app.on_cleanup.append(self._close)

    async def _close(self, app: web.Application) -> None:
        await self.feed.close()
        await self.agents.close()

    async def _redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/console/")

    async def _index(self, request: web.Request) -> web.Response:
        return self._asset("index.html")

    async def _login_page(self, request: web.Request) -> web.Response:
        return self._asset("login.html")

    async def _login(self, request: web.Request) -> web.Response:
        try:
            token = (await self._body(request)).get("token")
            if not isinstance(token, str) or not token:
                raise LocalError('send {"token": "<a bearer token of this cluster>"}')
            user = self.access.authenticator.authenticate(None, f"Bearer {token}")
        except KnemuError as exc:
            return _failure(exc)
        resp = web.json_response({"user": user.name})
        resp.set_cookie(SESSION_COOKIE, token, path="/", secure=True, httponly=True,
                        samesite="Strict")  # fmt: skip
        return resp

    async def _logout(self, request: web.Request) -> web.Response:
        check_same_origin(request)
        resp = web.json_response({})
        resp.del_cookie(SESSION_COOKIE, path="/")
        return resp

    async def _static(self, request: web.Request) -> web.Response:
        return self._asset(request.match_info["name"])

    def _asset(self, name: str) -> web.Response:
        found = static_file(name)
        if found is None:
            raise web.HTTPNotFound(text=f"no console asset {name!r}")
        data, ctype = found
        headers = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                   "Cache-Control": "no-cache", "Referrer-Policy": "no-referrer"}  # fmt: skip
        return web.Response(body=data, content_type=ctype, headers=headers)

    async def _body(self, request: web.Request) -> dict[str, Any]:
        check_same_origin(request)
        if (request.content_length or 0) > MAX_BODY_BYTES:
            raise LocalError(f"console actions take at most {MAX_BODY_BYTES} bytes")
        try:
            body = json.loads(await request.content.read(MAX_BODY_BYTES + 1))
        except ValueError:
            raise LocalError("the body must be a JSON object") from None
        if not isinstance(body, dict):
            raise LocalError("the body must be a JSON object")
        return body

    async def _flows(self, request: web.Request) -> web.StreamResponse:
        return await serve_flows(request, self.agents)

    async def _trace(self, request: web.Request) -> web.Response:
        try:
            result = await actions.trace(self.agents, self.store, await self._body(request))
        except KnemuError as exc:
            return _failure(exc)
        return web.json_response(result)

    async def _chaos(self, request: web.Request) -> web.Response:
        try:
            lines = await actions.chaos(self.agents, await self._body(request))
        except KnemuError as exc:
            return _failure(exc)
        self.feed.poke()
        return web.json_response({"lines": lines})


def add_console_routes(
    app: web.Application, store: Store, hub: WatchHub, access: Access
) -> Console:
    console = Console(store, hub, access)
    console.add_routes(app)
    return console
