"""End to end: a real api-server process, its watch feeding `knemu dns`, queried with dig.

Freshness is checked without polling DNS: the test waits until the DNS view has applied the
resourceVersion the api-server returned, then asks exactly once.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from dns_cluster import dig

import knemu
from knemu.config import DnsConfig
from knemu.dns.server import DnsServer
from knemu.testing import ApiServerProcess, apiserver_process, fake_cluster, rest_session, wait_for

Z = "cluster.local."
pytestmark = pytest.mark.slow


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[ApiServerProcess]:
    async with apiserver_process(tmp_path) as process:
        yield process


@pytest.fixture
async def dns_server(api: ApiServerProcess) -> AsyncIterator[DnsServer]:
    config = DnsConfig(
        apiserver=api.grpc_target, listen="127.0.0.1:0", metrics_listen="127.0.0.1:0"
    )
    async with DnsServer(config) as server:
        await asyncio.wait_for(server.wait_synced(), 20)
        yield server


async def _call(api: ApiServerProcess, method: str, path: str, body: Any = None) -> Any:
    async with (
        rest_session(api.admin) as http,
        http.request(method, f"{api.rest_url}{path}", json=body) as resp,
    ):
        data = await resp.json()
        assert resp.status < 300, data
        return data


async def _applied(server: DnsServer, rv: int) -> None:
    await wait_for(lambda: server.view.serial >= rv, 10, what=f"DNS view at rv {rv}")


async def test_builtin_services_resolve(dns_server: DnsServer) -> None:
    port = dns_server.udp_address[1]
    got = await dig(port, f"kubernetes.default.svc.{Z}")
    assert got.answer == [f"kubernetes.default.svc.{Z} 5 IN A 10.96.0.1"]
    got = await dig(port, f"_dns._udp.kube-dns.kube-system.svc.{Z}", "SRV", "+tcp")
    assert got.answer == [
        f"_dns._udp.kube-dns.kube-system.svc.{Z} 5 IN SRV 0 100 53 kube-dns.kube-system.svc.{Z}"
    ]
    got = await dig(port, Z, "NS")
    assert f"ns.dns.{Z} 5 IN A 10.96.0.10" in got.additional


async def test_create_resolve_delete_nxdomain(api: ApiServerProcess, dns_server: DnsServer) -> None:
    name = f"kt{secrets.token_hex(3)}"
    port = dns_server.udp_address[1]
    created = await _call(api, "POST", "/api/v1/namespaces/default/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"ports": [{"name": "http", "port": 80}], "selector": {"app": name}},
    })  # fmt: skip
    await _applied(dns_server, int(created["metadata"]["resourceVersion"]))
    cluster_ip = created["spec"]["clusterIP"]
    got = await dig(port, f"{name}.default.svc.{Z}")
    assert got.answer == [f"{name}.default.svc.{Z} 5 IN A {cluster_ip}"]
    got = await dig(port, "-x", cluster_ip)
    assert got.answer[0].endswith(f"PTR {name}.default.svc.{Z}")
    await _call(api, "DELETE", f"/api/v1/namespaces/default/services/{name}")
    await wait_for(lambda: dns_server.view.service("default", name) is None, 10, what="deleted")
    got = await dig(port, f"{name}.default.svc.{Z}")
    assert got.status == "NXDOMAIN"


async def test_headless_service_follows_pods(api: ApiServerProcess, dns_server: DnsServer) -> None:
    name = f"kt{secrets.token_hex(3)}"
    port = dns_server.udp_address[1]
    async with fake_cluster(api, nodes=2):
        await _call(api, "POST", "/api/v1/namespaces/default/services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"clusterIP": "None", "selector": {"app": name},
                     "ports": [{"name": "web", "port": 8080}]},
        })  # fmt: skip
        for i in range(2):
            await _call(api, "POST", "/api/v1/namespaces/default/pods", {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"{name}-{i}", "labels": {"app": name}},
                "spec": {"hostname": f"h{i}", "subdomain": name,
                         "containers": [{"name": "c", "image": "nginx"}]},
            })  # fmt: skip
        record = await wait_for(
            lambda: (r := dns_server.view.service("default", name)) and len(r.members) == 2 and r,
            20,
            what="two ready endpoints in the DNS view",
        )
        ips = sorted(m.ip for m in record.members)
        got = await dig(port, f"{name}.default.svc.{Z}")
        assert got.answer == sorted(f"{name}.default.svc.{Z} 5 IN A {ip}" for ip in ips)
        got = await dig(port, f"h0.{name}.default.svc.{Z}", "+tcp")
        assert len(got.answer) == 1 and got.answer[0].split()[-1] in ips
        got = await dig(port, f"_web._tcp.{name}.default.svc.{Z}", "SRV")
        targets = sorted(line.split()[-1] for line in got.answer)
        assert targets == [f"h0.{name}.default.svc.{Z}", f"h1.{name}.default.svc.{Z}"]
        assert len(got.additional) == 2


async def test_survives_an_apiserver_restart(api: ApiServerProcess, dns_server: DnsServer) -> None:
    port = dns_server.udp_address[1]
    await api.kill(signal.SIGKILL)
    # the view stays: names keep resolving while the api-server is down
    got = await dig(port, f"kubernetes.default.svc.{Z}")
    assert got.status == "NOERROR" and got.answer
    await api.restart()
    name = f"kt{secrets.token_hex(3)}"
    created = await _call(api, "POST", "/api/v1/namespaces/default/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"ports": [{"port": 80}]},
    })  # fmt: skip
    await wait_for(lambda: dns_server.view.service("default", name) is not None, 20, what=name)
    got = await dig(port, f"{name}.default.svc.{Z}")
    assert got.answer == [f"{name}.default.svc.{Z} 5 IN A {created['spec']['clusterIP']}"]


async def test_knemu_dns_process_serves_and_drains_on_sigterm(
    api: ApiServerProcess, tmp_path: Path
) -> None:
    """`python -m knemu.dns` (what `knemu dns` runs): serves, then exits 0 on SIGTERM."""
    log_path = tmp_path / f"kt{secrets.token_hex(3)}-dns.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(knemu.__file__).parent.parent), *sys.path])
    with open(log_path, "wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "knemu.dns", "--listen", "127.0.0.1:0",
            "--metrics-listen", "127.0.0.1:0", "--apiserver", api.grpc_target,
            stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file, env=env,
        )  # fmt: skip
    try:
        line = await wait_for(lambda: _listening(log_path), 20, what="knemu dns listening")
        port, metrics = int(line[1]), line[2]
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                async with http.get(f"http://{metrics}/ready") as resp:
                    return resp.status == 200

            await wait_for(ready, 20, what="knemu dns synced")
        got = await dig(port, f"kubernetes.default.svc.{Z}", "+tcp")
        assert got.answer == [f"kubernetes.default.svc.{Z} 5 IN A 10.96.0.1"]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _listening(log_path: Path) -> re.Match[str] | None:
    text = log_path.read_text(errors="replace")
    return re.search(r"on 127\.0\.0\.1:(\d+) \(udp\+tcp\), metrics http://([\d.:]+)/", text)
