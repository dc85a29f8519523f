"""A tiny read-only OCI distribution registry for tests: serves an OCI image layout over the
pull half of the distribution API (https://github.com/opencontainers/distribution-spec,
"Pull"): ``GET /v2/``, ``GET|HEAD /v2/<name>/manifests/<tag|digest>`` and
``GET|HEAD /v2/<name>/blobs/<digest>``.  Enough for ``skopeo copy docker://...``.

An image ``<name>:<tag>`` is the layout's manifest annotated
``org.opencontainers.image.ref.name: <name>:<tag>`` (what ``skopeo copy ... oci:DIR:<name>:<tag>``
writes).  Plain HTTP, meant for loopback inside a test's own namespace::

    async with serve_layout(layout_dir, "127.0.0.1", port) as url: ...
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-z0-9]+(?:[._/-][a-z0-9]+)*$")
REF_ANNOTATION = "org.opencontainers.image.ref.name"


def _error(status: int, code: str, message: str) -> web.Response:
    body = {"errors": [{"code": code, "message": message}]}
    return web.json_response(body, status=status)


class LayoutRegistry:
    def __init__(self, layout: Path) -> None:
        self.layout = layout
        self.requests: list[str] = []  # "GET /v2/..." in order, for tests

    def _manifest(self, name: str, reference: str) -> tuple[str, str] | None:
        """(digest, media type) of ``name:reference`` (or of a digest), or None."""
        index = json.loads((self.layout / "index.json").read_text())
        for entry in index.get("manifests", []):
            ref = entry.get("annotations", {}).get(REF_ANNOTATION, "")
            if ref == f"{name}:{reference}" or entry.get("digest") == reference:
                return entry["digest"], entry["mediaType"]
        return None

    def _blob(self, digest: str) -> Path:
        return self.layout / "blobs" / "sha256" / digest.split(":", 1)[1]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(f"{request.method} {request.path}")
        path = request.path
        if path in ("/v2", "/v2/"):
            return web.json_response({})
        m = re.match(r"^/v2/(.+)/(manifests|blobs)/([^/]+)$", path)
        if m is None or not _NAME.match(m.group(1)):
            return _error(404, "NAME_UNKNOWN", f"no repository at {path}")
        name, what, reference = m.groups()
        if what == "manifests":
            found = self._manifest(name, reference)
            if found is None:
                return _error(404, "MANIFEST_UNKNOWN", f"{name}:{reference} is not here")
            digest, media_type = found
        else:
            if not _DIGEST.match(reference):
                return _error(400, "DIGEST_INVALID", f"{reference} is not a sha256 digest")
            digest, media_type = reference, "application/octet-stream"
        blob = self._blob(digest)
        if not blob.is_file():
            return _error(404, "BLOB_UNKNOWN", f"{digest} is not here")
        headers = {"Docker-Content-Digest": digest, "Content-Type": media_type}
        if request.method == "HEAD":
            headers["Content-Length"] = str(blob.stat().st_size)
            return web.Response(headers=headers)
        return web.Response(body=blob.read_bytes(), headers=headers)


@asynccontextmanager
async def serve_layout(layout: Path, host: str, port: int) -> AsyncIterator[LayoutRegistry]:
    """Serve ``layout`` at http://host:port until the block ends."""
    registry = LayoutRegistry(layout)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", registry.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        yield registry
    finally:
        await runner.cleanup()
