"""Fixtures for the api-server tests: a REST app (TLS, with authentication and RBAC, as the
api-server serves it) on a free loopback port over an in-memory store; the client is admin."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from knemu import pki
from knemu.apiserver.rest import tls
from knemu.apiserver.rest.access import Access
from knemu.apiserver.rest.handlers import RestApi
from knemu.apiserver.rest.proxy import NodeProxy
from knemu.apiserver.storage.store import Store
from knemu.apiserver.storage.watch_hub import WatchHub
from knemu.testing import rest_session

from .rest_env import NOW, FakeAdmission, RestEnv


@pytest.fixture
async def rest(tmp_path: Path) -> AsyncIterator[RestEnv]:
    store = Store(":memory:", event_history=50)
    hub = WatchHub(store, queue_events=20)
    admission = FakeAdmission()
    server_pki = pki.ensure_pki(tmp_path, ["127.0.0.1"])
    access = Access(store, tls.authenticator(server_pki))
    app = web.Application(middlewares=[access.middleware])
    NodeProxy(store).add_routes(app)
    RestApi(store, hub, admission, access, clock=lambda: NOW, watch_check_s=0.2).add_routes(app)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_pki.server_ssl_context())
        await site.start()
        base = f"https://127.0.0.1:{runner.addresses[0][1]}"
        admin = pki.admin_credentials(server_pki, base)
        async with rest_session(admin) as http:
            yield RestEnv(base, store, hub, admission, http, admin)
    finally:
        hub.close()
        await runner.cleanup()
        store.close()
