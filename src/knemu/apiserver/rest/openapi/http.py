"""/openapi/v2 and /openapi/v3 over HTTP (aiohttp); the documents come from ``documents.py``."""

from __future__ import annotations

import json

from aiohttp import web

from knemu.apiserver.rest.openapi import documents as openapi
from knemu.apiserver.rest.status import status_failure
from knemu.errors import NotFound

# The documents never change while the server runs; a v3 document is addressed by its hash.
_IMMUTABLE = {"Cache-Control": "public, immutable", "Expires": "Fri, 01 Jan 2100 00:00:00 GMT"}


def add_routes(app: web.Application) -> None:
    app.router.add_get("/openapi/v2", _v2)
    app.router.add_get("/openapi/v3", _v3_discovery)
    app.router.add_get("/openapi/v3/{path:.+}", _v3_document)


async def _v2(request: web.Request) -> web.Response:
    # client-go asks for protobuf only; browsers and curl get the JSON document.
    accept = request.headers.get("Accept", "")
    if any(kind in accept for kind in openapi.PROTOBUF_V2_ACCEPT):
        return web.Response(body=openapi.v2_protobuf(), content_type=openapi.PROTOBUF_V2)
    return web.json_response(openapi.v2_document())


async def _v3_discovery(request: web.Request) -> web.Response:
    return web.json_response(openapi.v3_discovery())


async def _v3_document(request: web.Request) -> web.Response:
    path = request.match_info["path"]
    found = openapi.v3_documents().get(path)
    if found is None:
        err = NotFound(f"no OpenAPI v3 document for {path!r}; GET /openapi/v3 lists them")
        return web.json_response(status_failure(err), status=404, dumps=json.dumps)
    digest, body = found
    headers = _IMMUTABLE if request.query.get("hash") == digest else {}
    return web.Response(body=body, content_type="application/json", headers=headers)
