"""Authentication and authorization of every REST request (aiohttp middleware).

The adapter only gathers what the request carries (the verified client certificate's
subject, the Authorization header, the console's session cookie) and hands it to the
sans-I/O cores in ``apiserver/auth``: the authenticator chain, the request attributes and
the RBAC ``Policy``.  Unauthenticated requests answer 401, forbidden ones 403, both with a
Kubernetes ``Status`` body; a browser asking for a console page without credentials is sent
to the console's sign-in page instead.

The console's cookie holds a bearer token and is read like an Authorization header: it is
HttpOnly, Secure and SameSite=Strict, so another site's page cannot make a browser send it,
and the console's writes carry JSON bodies a cross-site form cannot produce.

The policy is a snapshot rebuilt whenever a Role, ClusterRole or binding changes.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from knemu.apiserver.auth import rbac
from knemu.apiserver.auth.attributes import request_attributes
from knemu.apiserver.auth.authn import (
    Authenticator,
    Forbidden,
    Unauthorized,
    UserInfo,
    anonymous_allowed,
)
from knemu.apiserver.rest.status import status_failure
from knemu.apiserver.storage.store import Store, StoredEvent
from knemu.errors import KnemuError

USER_KEY = web.RequestKey("knemu.user", UserInfo)
SESSION_COOKIE = "knemu-console-token"
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def user_of(request: web.Request) -> UserInfo:
    """The authenticated user of a request that passed the middleware."""
    return request[USER_KEY]


def _cert_subject(request: web.Request) -> tuple[str, tuple[str, ...]] | None:
    """(CN, Os) of the client certificate, if one was presented and verified by the CA."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    cn, orgs = "", []
    subject: Any = cert.get("subject", ())
    for rdn in subject:
        for key, value in rdn:
            if key == "commonName":
                cn = str(value)
            elif key == "organizationName":
                orgs.append(str(value))
    return cn, tuple(orgs)


class Access:
    """The authenticator and the RBAC policy, kept current from the store."""

    def __init__(self, store: Store, authenticator: Authenticator) -> None:
        self.store = store
        self.authenticator = authenticator
        self.policy = self._load()
        store.add_listener(self._on_event)

    def _load(self) -> rbac.Policy:
        return rbac.Policy({kind: self.store.list(kind) for kind in rbac.KINDS})

    def _on_event(self, event: StoredEvent) -> None:
        if event.kind in rbac.KINDS:
            self.policy = self._load()

    def authenticate(self, request: web.Request) -> UserInfo:
        header = request.headers.get("Authorization")
        if header is None:
            cookie = request.cookies.get(SESSION_COOKIE)
            header = f"Bearer {cookie}" if cookie else None
        user = self.authenticator.authenticate(_cert_subject(request), header)
        if user.anonymous and not anonymous_allowed(request.path):
            raise Unauthorized(
                "Unauthorized: this api-server needs credentials (a client certificate or a "
                "bearer token): use the kubeconfig `knemu up` wrote, or `knemu kubeconfig`"
            )
        return user

    def check(self, request: web.Request) -> UserInfo:
        user = self.authenticate(request)
        if any(h.lower().startswith("impersonate-") for h in request.headers):
            # Never silently act as the caller instead of the user it names.
            raise Forbidden("impersonation (kubectl --as/--as-group) is not supported by knemu: "
                            "use that user's own credentials")  # fmt: skip
        attrs = request_attributes(user, request.method, request.path, request.query)
        allowed, _ = self.policy.authorize(attrs)
        if not allowed:
            raise Forbidden(rbac.forbidden_message(attrs))
        return user

    @web.middleware
    async def middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        try:
            request[USER_KEY] = self.check(request)
        except KnemuError as err:
            if isinstance(err, Unauthorized) and request.path in ("/console", "/console/"):
                raise web.HTTPFound("/console/login") from None
            body: dict[str, Any] = status_failure(err)
            return web.json_response(body, status=err.http_status, dumps=json.dumps)
        return await handler(request)

    def check_escalation(self, request: web.Request, obj: dict[str, Any]) -> None:
        """403 when the request's user would gain, by writing this role or binding,
        permissions it does not hold (RBAC's escalation prevention)."""
        why = rbac.escalation(self.policy, user_of(request), obj)
        if why:
            raise Forbidden(why)

    def close(self) -> None:
        self.store.remove_listener(self._on_event)
