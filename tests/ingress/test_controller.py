"""The ingress controller against a real api-server (in this process) and real backends on
loopback: it lists and watches Ingress/Service/EndpointSlice/Secret over REST, routes by path,
answers 404/503 as nginx, terminates TLS with the Secret picked by SNI, adds X-Forwarded-*,
follows endpoint changes and writes the published Service's address into Ingress status."""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from knemu.errors import ConfigError
from knemu.ingress.apiclient import ClusterConfig, in_cluster_config
from knemu.ingress.controller import ControllerConfig, running
from knemu.testing import apiserver_inprocess, free_port, rest_session, wait_for

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ingress" / "ingress-controller.yaml"

pytestmark = pytest.mark.slow


@contextlib.asynccontextmanager
async def backends(*names: str) -> AsyncIterator[dict[str, int]]:
    """One HTTP server per name on loopback, answering what it saw as JSON."""
    runners, ports = [], {}
    for name in names:

        async def echo(request: web.Request, name: str = name) -> web.Response:
            body = (await request.read()).decode()
            seen = {"from": name, "path": request.path_qs, "peer": request.remote,
                    "headers": dict(request.headers), "body": body}  # fmt: skip
            return web.json_response(seen, headers={"X-Backend": name})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", echo)
        runner = web.AppRunner(app)
        await runner.setup()
        ports[name] = free_port()
        await web.TCPSite(runner, "127.0.0.1", ports[name]).start()
        runners.append(runner)
    try:
        yield ports
    finally:
        for runner in runners:
            await runner.cleanup()


def self_signed(tmp: Path, host: str) -> tuple[bytes, bytes]:
    key, crt = tmp / "tls.key", tmp / "tls.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(crt), "-days", "1", "-subj", f"/CN={host}",
                    "-addext", f"subjectAltName=DNS:{host}"],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    return crt.read_bytes(), key.read_bytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Api:
    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url, self.http = url, http

    async def create(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        async with self.http.post(self.url + path, json=obj) as reply:
            body: dict[str, Any] = await reply.json()
            assert reply.status == 201, body
            return body

    async def get(self, path: str) -> dict[str, Any]:
        async with self.http.get(self.url + path) as reply:
            body: dict[str, Any] = await reply.json()
            return body

    async def delete(self, path: str) -> None:
        async with self.http.delete(self.url + path) as reply:
            assert reply.status == 200, await reply.text()


def svc(name: str, kind: str = "ClusterIP") -> dict[str, Any]:
    ports = [{"name": "http", "port": 80, "targetPort": 8080}]
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"type": kind, "ports": ports}}  # fmt: skip


def eps(name: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
    }  # fmt: skip


def path(p: str, service: str, port: dict[str, Any], kind: str = "Prefix") -> dict[str, Any]:
    return {"path": p, "pathType": kind, "backend": {"service": {"name": service, "port": port}}}


async def test_controller_routes_terminates_tls_and_publishes_status(tmp_path: Path) -> None:
    crt, key = self_signed(tmp_path, "cafe.example")
    ns = "/api/v1/namespaces/default"
    net = "/apis/networking.k8s.io/v1"
    async with (
        apiserver_inprocess(tmp_path) as server,
        backends("coffee", "tea") as ports,
        rest_session(server.admin) as api_http,
        aiohttp.ClientSession() as http,
    ):
        api = Api(server.rest_url, api_http)
        for name in ("coffee", "tea", "empty"):
            await api.create(f"{ns}/services", svc(name))
        for name in ("coffee", "tea"):
            await api.create("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
                             eps(name, ports[name]))  # fmt: skip
        lb = await api.create(f"{ns}/services", svc("ingress-lb", "LoadBalancer"))
        pair = {"tls.crt": b64(crt), "tls.key": b64(key)}
        await api.create(f"{ns}/secrets", {"apiVersion": "v1", "kind": "Secret",
                                           "metadata": {"name": "cafe-tls"},
                                           "type": "kubernetes.io/tls", "data": pair})  # fmt: skip
        await api.create(f"{net}/ingressclasses", {
            "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": "knemu"}, "spec": {"controller": "knemu.dev/ingress"},
        })  # fmt: skip
        await api.create(f"{net}/namespaces/default/ingresses", {
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "cafe"},
            "spec": {
                "ingressClassName": "knemu",
                "tls": [{"hosts": ["cafe.example"], "secretName": "cafe-tls"}],
                "rules": [{"http": {"paths": [
                    path("/coffee", "coffee", {"number": 80}),
                    path("/tea", "tea", {"name": "http"}),
                    path("/empty", "empty", {"number": 80}),
                ]}}],
            },
        })  # fmt: skip
        await api.create(f"{net}/namespaces/default/ingresses", {
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "other"},
            "spec": {"ingressClassName": "nginx", "rules": [{"http": {"paths": [
                path("/other", "coffee", {"number": 80})]}}]},
        })  # fmt: skip
        ca_file = tmp_path / "ca.crt"
        ca_file.write_bytes(server.admin.ca_pem)
        token = await controller_token(api)  # as the example's ServiceAccount, bound by RBAC
        cluster = ClusterConfig(server.rest_url, token, str(ca_file))
        config = ControllerConfig(cluster, "knemu", "default/ingress-lb",
                                  "127.0.0.1", free_port(), free_port())  # fmt: skip
        async with running(config):
            base = f"http://127.0.0.1:{config.http_port}"
            async with http.post(f"{base}/coffee/beans?roast=dark", data=b"order",
                                 headers={"Host": "cafe.example",
                                          "X-Forwarded-For": "203.0.113.7"}) as reply:  # fmt: skip
                seen = json.loads(await reply.text())
                assert reply.status == 200 and reply.headers["X-Backend"] == "coffee"
            assert seen["path"] == "/coffee/beans?roast=dark" and seen["body"] == "order"
            h = seen["headers"]
            assert h["X-Forwarded-For"] == "203.0.113.7, 127.0.0.1"
            assert (h["X-Forwarded-Proto"], h["X-Forwarded-Host"]) == ("http", "cafe.example")
            assert h["Host"] == "cafe.example" and h["X-Real-IP"] == "127.0.0.1"

            async def fetch(url: str, **kw: Any) -> tuple[int, str]:
                async with http.get(url, **kw) as r:
                    return r.status, await r.text()

            assert json.loads((await fetch(f"{base}/tea"))[1])["from"] == "tea"
            status, body = await fetch(f"{base}/coffeecake")  # Prefix is element-wise
            assert status == 404 and "<center><h1>404 Not Found</h1></center>" in body
            assert (await fetch(f"{base}/other"))[0] == 404  # another class's Ingress
            status, body = await fetch(f"{base}/empty")
            assert status == 503 and "503 Service Temporarily Unavailable" in body

            tls = ssl.create_default_context(cadata=crt.decode())
            conn = aiohttp.TCPConnector(ssl=tls, resolver=_Resolver(config.https_port))
            url = f"https://cafe.example:{config.https_port}/tea"
            async with (
                aiohttp.ClientSession(connector=conn) as tls_http,
                tls_http.get(url) as r,
            ):
                seen = json.loads(await r.text())
            assert seen["from"] == "tea" and seen["headers"]["X-Forwarded-Proto"] == "https"

            lb_path = f"{ns}/services/ingress-lb"
            lb_ip = await wait_for(lambda: _lb(api, lb_path), 15, what="LoadBalancer address")
            assert lb["metadata"]["name"] == "ingress-lb"

            async def published() -> bool:
                ing = await api.get(f"{net}/namespaces/default/ingresses/cafe")
                got = ing.get("status", {}).get("loadBalancer", {}).get("ingress")
                return bool(got == [{"ip": lb_ip}])

            await wait_for(published, 15, what="Ingress status.loadBalancer from the Service")
            other = await api.get(f"{net}/namespaces/default/ingresses/other")
            assert not other.get("status", {}).get("loadBalancer")

            await api.delete("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/tea")

            async def tea_unavailable() -> bool:
                return (await fetch(f"{base}/tea"))[0] == 503

            await wait_for(tea_unavailable, 15, what="/tea 503 once its endpoints are gone")


async def controller_token(api: Api) -> str:
    """The RBAC objects of examples/ingress/ingress-controller.yaml (its ServiceAccount,
    ClusterRole and binding), then a token for that ServiceAccount (TokenRequest)."""
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    paths = {"Namespace": "/api/v1/namespaces", "ClusterRole": f"{rbac}/clusterroles",
             "ClusterRoleBinding": f"{rbac}/clusterrolebindings",
             "ServiceAccount": "/api/v1/namespaces/ingress-knemu/serviceaccounts"}  # fmt: skip
    for doc in yaml.safe_load_all(EXAMPLE.read_text()):
        if doc["kind"] in paths:
            await api.create(paths[doc["kind"]], doc)
    sa = "/api/v1/namespaces/ingress-knemu/serviceaccounts/knemu-ingress/token"
    answer = await api.create(sa, {"kind": "TokenRequest", "spec": {}})
    return str(answer["status"]["token"])


async def _lb(api: Api, path: str) -> str:
    got = await api.get(path)
    ingress = got.get("status", {}).get("loadBalancer", {}).get("ingress") or [{}]
    return str(ingress[0].get("ip") or "")


class _Resolver(aiohttp.abc.AbstractResolver):
    """cafe.example -> 127.0.0.1, so the TLS client sends SNI cafe.example to the listener."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[Any]:
        import socket

        return [{"hostname": host, "host": "127.0.0.1", "port": port, "family": socket.AF_INET,
                 "proto": 0, "flags": 0}]  # fmt: skip

    async def close(self) -> None:
        return None


def test_in_cluster_config_reads_env_and_the_service_account(tmp_path: Path) -> None:
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    plain = in_cluster_config(env, sa_dir=tmp_path)
    assert plain == ClusterConfig("http://10.96.0.1:443")
    (tmp_path / "token").write_text("abc\n")
    (tmp_path / "ca.crt").write_text("")
    secure = in_cluster_config(env, sa_dir=tmp_path)
    assert secure.server == "https://10.96.0.1:443" and secure.headers() == {
        "Authorization": "Bearer abc"
    }
    assert in_cluster_config({}, "http://192.168.59.1:6443/", tmp_path).server.endswith(":6443")
    with pytest.raises(ConfigError, match="KUBERNETES_SERVICE_HOST"):
        in_cluster_config({}, sa_dir=tmp_path / "none")
