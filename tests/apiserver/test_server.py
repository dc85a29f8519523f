"""The whole api-server in-process (free ports) and as a process (SIGTERM -> exit 0)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from knemu.apiserver.rest import resources
from knemu.apiserver.server import ApiServer, serve
from knemu.config import ApiServerConfig, Timings
from knemu.proto.client import ClusterClient
from knemu.testing import rest_session, wait_for

SRC = str(Path(__file__).resolve().parents[2] / "src")


def config_for(tmp_path: Path) -> ApiServerConfig:
    return ApiServerConfig(
        data_dir=str(tmp_path / "data"), listen="127.0.0.1:0", grpc_listen="127.0.0.1:0"
    )


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ApiServer]:
    async with ApiServer(config_for(tmp_path)) as srv:
        yield srv


async def get_json(srv: ApiServer, path: str) -> tuple[int, Any]:
    """GET ``path`` as the admin (the credentials the server wrote when it started)."""
    assert srv.admin is not None
    async with rest_session(srv.admin) as http, http.get(srv.rest_url + path) as resp:
        return resp.status, await resp.json()


async def send_json(srv: ApiServer, method: str, path: str, body: Any) -> tuple[int, Any]:
    assert srv.admin is not None
    url = srv.rest_url + path
    async with rest_session(srv.admin) as http, http.request(method, url, json=body) as resp:
        return resp.status, await resp.json()


async def test_ready_line_and_bootstrap(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="knemu.apiserver")
    async with ApiServer(config_for(tmp_path)) as srv:
        ready = [r.getMessage() for r in caplog.records if "ready" in r.getMessage()]
        data = os.path.abspath(tmp_path / "data")
        assert ready == [
            f"knemu apiserver ready: rest={srv.rest_url} grpc={srv.grpc_target} data={data}"
        ]
        assert not srv.rest_url.endswith(":0") and not srv.grpc_target.endswith(":0")
        status, svc = await get_json(srv, "/api/v1/namespaces/kube-system/services/kube-dns")
        assert status == 200 and svc["spec"]["clusterIP"] == "10.96.0.10"
    assert (tmp_path / "data" / "knemu.db").exists()


async def test_restart_keeps_objects_and_resource_version(tmp_path: Path) -> None:
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kt-keep"}}
    async with ApiServer(config_for(tmp_path)) as srv:
        status, created = await send_json(srv, "POST", "/api/v1/namespaces", ns)
        assert status == 201
    async with ApiServer(config_for(tmp_path)) as srv:
        status, got = await get_json(srv, "/api/v1/namespaces/kt-keep")
        assert status == 200 and got["metadata"]["uid"] == created["metadata"]["uid"]
        _, lst = await get_json(srv, "/api/v1/namespaces")
        assert int(lst["metadata"]["resourceVersion"]) >= int(
            created["metadata"]["resourceVersion"]
        )


async def test_grpc_registration_shows_up_in_rest_and_proxy(server: ApiServer) -> None:
    agent = web.Application()
    agent.router.add_get("/healthz", _ok)
    runner = web.AppRunner(agent)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        async with ClusterClient(server.grpc_target) as cluster:
            reply = await cluster.register_node(
                identity="kt-host-1",
                internal_ip="127.0.0.1",
                vtep_mac="02:00:00:00:00:01",
                kubelet_port=runner.addresses[0][1],
            )
        name = reply.node.metadata.name
        status, node = await get_json(server, f"/api/v1/nodes/{name}")
        assert status == 200
        assert {"type": "InternalIP", "address": "127.0.0.1"} in node["status"]["addresses"]
        assert server.admin is not None
        async with rest_session(server.admin) as http:
            url = f"{server.rest_url}/api/v1/nodes/{name}/proxy/healthz"
            async with http.get(url) as resp:
                assert resp.status == 200 and await resp.text() == "agent ok"
    finally:
        await runner.cleanup()


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="agent ok")


async def test_controllers_run_on_changes(server: ApiServer) -> None:
    deploy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "sample"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "sample"}},
            "template": {
                "metadata": {"labels": {"app": "sample"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            },
        },
    }
    url = "/apis/apps/v1/namespaces/default/deployments"
    assert (await send_json(server, "POST", url, deploy))[0] == 201

    async def three_pods() -> bool:
        _, pods = await get_json(
            server, "/api/v1/namespaces/default/pods?labelSelector=app%3Dsample"
        )
        return len(pods["items"]) == 3

    await wait_for(three_pods, 20, what="the Deployment's 3 pods")


async def test_lease_expiry_runs_without_store_changes(tmp_path: Path) -> None:
    # Nothing writes after the registration: only the timer-driven sync can mark it NotReady.
    fast = Timings(lease_renew_s=0.1, node_grace_s=0.5, eviction_toleration_s=30.0)
    config = config_for(tmp_path).replace(timings=fast)
    async with ApiServer(config) as srv:
        async with ClusterClient(srv.grpc_target) as cluster:
            reply = await cluster.register_node(
                identity="kt-host-2", internal_ip="127.0.0.1", vtep_mac="02:00:00:00:00:02"
            )
        url = f"/api/v1/nodes/{reply.node.metadata.name}"

        async def not_ready() -> bool:
            _, node = await get_json(srv, url)
            ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
            return bool(ready) and ready[0]["status"] != "True"

        await wait_for(not_ready, 20, what="the node to become NotReady after its lease expired")


async def test_serve_until_stop(tmp_path: Path) -> None:
    ready, stop = asyncio.Event(), asyncio.Event()
    servers: list[ApiServer] = []
    task = asyncio.create_task(
        serve(config_for(tmp_path), ready=ready, stop=stop, started=servers.append)
    )
    await asyncio.wait_for(ready.wait(), 20)
    status, _ = await get_json(servers[0], "/version")
    assert status == 200
    stop.set()
    await asyncio.wait_for(task, 20)


def test_process_sigterm_exits_zero(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=SRC)
    args = ["--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--data-dir", str(tmp_path)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "knemu.apiserver", *args],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 30
        line = ""
        while time.monotonic() < deadline and "knemu apiserver ready:" not in line:
            line = proc.stderr.readline()
            assert line, "the api-server exited before it was ready"
        assert "rest=https://127.0.0.1:" in line and ":0 " not in line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_seed_manifests_apply_unchanged_over_rest(server: ApiServer) -> None:
    """Every example manifest, sent as its own YAML text (seed 002's trailing TABs included)
    to its Kubernetes path (cluster-scoped kinds without a namespace), is accepted."""
    examples = Path(__file__).resolve().parents[2] / "examples"
    files = sorted(examples.rglob("*.yaml"))
    assert files, "no example manifests found"
    assert server.admin is not None
    async with rest_session(server.admin) as http:
        for i, path in enumerate(files):
            ns = f"kt-example-{i}"  # seed 002's three files reuse one Service name
            namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
            async with http.post(f"{server.rest_url}/api/v1/namespaces", json=namespace) as r:
                assert r.status == 201
            for text in re.split(r"^---\s*$", path.read_text(encoding="utf-8"), flags=re.M):
                doc = yaml.safe_load(re.sub(r"[ \t]+$", "", text, flags=re.M))
                if not doc:
                    continue
                res = resources.by_kind(doc["kind"])
                assert res is not None, f"{path.name}: kind {doc['kind']} is not served"
                prefix = "/api/v1" if not res.group else f"/apis/{res.group_version}"
                # a manifest that names its namespace (and creates it) is sent there
                where = (doc.get("metadata") or {}).get("namespace") or ns
                scope = f"/namespaces/{where}" if res.namespaced else ""
                url = f"{server.rest_url}{prefix}{scope}/{res.plural}"
                headers = {"Content-Type": "application/yaml"}
                async with http.post(url, data=text, headers=headers) as resp:
                    body = await resp.json()
                    assert resp.status == 201, f"{path.name}: {body.get('message')}"


async def test_the_kubernetes_service_has_the_api_servers_own_endpoint(server: ApiServer) -> None:
    """As kube-apiserver's endpoint reconciler: pods reach it at 10.96.0.1:443 through this."""
    base = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
    selector = "?labelSelector=kubernetes.io/service-name%3Dkubernetes"
    status, slices = await get_json(server, base + selector)
    assert status == 200
    (only,) = slices["items"]  # written directly: the Endpoints object is not mirrored again
    assert only["endpoints"][0]["addresses"] == ["127.0.0.1"]
    assert only["ports"] == [{"name": "https", "port": server.rest_port, "protocol": "TCP"}]
    status, eps = await get_json(server, "/api/v1/namespaces/default/endpoints/kubernetes")
    assert eps["subsets"][0]["addresses"] == [{"ip": "127.0.0.1"}]


def test_a_wildcard_listener_advertises_the_hosts_own_address() -> None:
    from knemu.apiserver.server import advertise_address

    assert advertise_address("192.168.59.1") == "192.168.59.1"
    assert advertise_address("0.0.0.0") not in ("", "0.0.0.0")
