"""Fixtures for the api-server tests: a REST app on a free loopback port over an in-memory store."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from knemu.apiserver.rest.handlers import RestApi
from knemu.apiserver.rest.proxy import NodeProxy
from knemu.apiserver.storage.store import Store
from knemu.apiserver.storage.watch_hub import WatchHub

from .rest_env import NOW, FakeAdmission, RestEnv


@pytest.fixture
async def rest() -> AsyncIterator[RestEnv]:
    store = Store(":memory:", event_history=50)
    hub = WatchHub(store, queue_events=20)
    admission = FakeAdmission()
    app = web.Application()
    NodeProxy(store).add_routes(app)
    RestApi(store, hub, admission, clock=lambda: NOW, watch_check_s=0.2).add_routes(app)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as http:
            yield RestEnv(f"http://127.0.0.1:{port}", store, hub, admission, http)
    finally:
        hub.close()
        await runner.cleanup()
        store.close()
