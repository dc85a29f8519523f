"""POST-only review resources over HTTP (aiohttp); the answers come from ``review_answers.py``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from knemu.apiserver.auth.rbac import Policy
from knemu.apiserver.rest.access import user_of
from knemu.apiserver.rest.bodies import decode_object
from knemu.apiserver.rest.review_answers import REVIEWS, Answer
from knemu.apiserver.rest.status import MethodNotAllowed, status_failure
from knemu.errors import KnemuError

Obj = dict[str, Any]


def add_routes(app: web.Application, policy: Callable[[], Policy]) -> None:
    """Before the REST catch-all: these paths are answered, never stored.  ``policy`` gives
    the current RBAC policy; the user is the one the access middleware authenticated."""
    for path, answer in REVIEWS.items():
        app.router.add_route("*", f"/apis/{path}", _handler(answer, policy))


def _handler(answer: Answer, policy: Callable[[], Policy]) -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> web.Response:
        try:
            if request.method != "POST":
                raise MethodNotAllowed(
                    f"{request.method} is not supported on {request.path}: reviews are only "
                    "created (POST), never stored"
                )
            body = answer(
                decode_object(await request.read(), request.content_type),
                user_of(request),
                policy(),
            )
        except KnemuError as err:
            return web.json_response(status_failure(err), status=err.http_status,
                                     dumps=json.dumps)  # fmt: skip
        return web.json_response(body, status=201)

    return handle
