"""Fixtures for the api-server tests: a REST app (TLS, with authentication and RBAC, as the
api-server serves it) on a free loopback port over an in-memory store; the client is admin."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiohttp import web

from knemu import pki
from knemu.apiserver.rest import tls
from knemu.apiserver.rest.access import Access
from knemu.apiserver.rest.handlers import RestApi
from knemu.apiserver.rest.proxy import NodeProxy
from knemu.apiserver.storage.store import Store
from knemu.apiserver.storage.watch_hub import WatchHub
from knemu.node_agent.dataplane.faults import Impairments
from knemu.node_agent.dataplane.flows import FlowLog
from knemu.node_agent.kubelet.api import KubeletApi
from knemu.node_agent.kubelet.capture import CaptureTaps
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


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(b"echo:" + data)
        await writer.drain()
    writer.close()


@pytest.fixture
async def agent() -> AsyncIterator[tuple[int, int]]:
    """(agent API port, echo port); the agent runs pod default/p only."""
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    handles = {"default/p": SimpleNamespace(ip="127.0.0.1", uid="uid-p")}
    pods = SimpleNamespace(handles=handles, runtime=None)
    api = KubeletApi(
        "n1", pods, FlowLog(), Impairments(), table=dict, metrics=str, cni=lambda: None,
        inject=lambda key, packet, now: None, captures=CaptureTaps(lambda: None, {}),
    )  # fmt: skip
    await api.start("127.0.0.1", 0)
    try:
        yield api.port, echo.sockets[0].getsockname()[1]
    finally:
        await api.stop()
        echo.close()
        await echo.wait_closed()
