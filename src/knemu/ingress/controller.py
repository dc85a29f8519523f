"""The ingress controller process: informers feed the routing core; the proxy serves HTTP on
one port and HTTPS on another; owned Ingresses get the published Service's addresses in
status.loadBalancer (ingress-nginx's ``--publish-service``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from knemu.ingress import routing
from knemu.ingress.apiclient import ApiClient, ApiError, ClusterConfig, Informer
from knemu.ingress.proxy import ReverseProxy, TlsContexts, View

log = logging.getLogger(__name__)

PATHS = {
    "ingresses": "/apis/networking.k8s.io/v1/ingresses",
    "classes": "/apis/networking.k8s.io/v1/ingressclasses",
    "services": "/api/v1/services",
    "slices": "/apis/discovery.k8s.io/v1/endpointslices",
    "secrets": "/api/v1/secrets",
}


@dataclass(frozen=True)
class ControllerConfig:
    cluster: ClusterConfig
    ingress_class: str = "knemu"
    publish_service: str = ""  # namespace/name of the controller's LoadBalancer Service
    listen: str = "0.0.0.0"
    http_port: int = 80
    https_port: int = 443


class IngressController:
    def __init__(self, config: ControllerConfig, session: aiohttp.ClientSession) -> None:
        self.config = config
        self.view = View()
        self.client = ApiClient(config.cluster, session)
        self._dirty = asyncio.Event()
        self.informers = {k: Informer(self.client, p, self._dirty.set) for k, p in PATHS.items()}
        self.proxy = ReverseProxy(self.view, session)
        self.tls = TlsContexts(lambda: self.view.table)

    def rebuild(self) -> None:
        objs = {k: inf.objects for k, inf in self.informers.items()}
        own_class = objs["classes"].get(("", self.config.ingress_class))
        self.view.table = routing.build(objs["ingresses"].values(), self.config.ingress_class,
                                        routing.class_is_default(own_class))  # fmt: skip
        self.view.services = dict(objs["services"])
        self.view.slices = list(objs["slices"].values())
        self.tls.update(objs["secrets"])

    async def publish_status(self) -> None:
        if not self.config.publish_service:
            return
        ns, _, name = self.config.publish_service.partition("/")
        svc = self.informers["services"].objects.get((ns, name))
        want = routing.load_balancer_status(svc)
        for ing in list(self.informers["ingresses"].objects.values()):
            if not routing.owns(ing, self.config.ingress_class, self._default_class()):
                continue
            have = ((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if have == want:
                continue
            meta = ing["metadata"]
            ns_path = f"/apis/networking.k8s.io/v1/namespaces/{meta['namespace']}"
            path = f"{ns_path}/ingresses/{meta['name']}"
            try:
                await self.client.patch_status(path, {"loadBalancer": {"ingress": want}})
            except (ApiError, aiohttp.ClientError) as exc:
                log.warning("status of ingress %s/%s: %s", meta["namespace"], meta["name"], exc)

    def _default_class(self) -> bool:
        own = self.informers["classes"].objects.get(("", self.config.ingress_class))
        return routing.class_is_default(own)

    async def sync(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            self.rebuild()
            await self.publish_status()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.proxy.handle)
        return app


@contextlib.asynccontextmanager
async def running(config: ControllerConfig) -> AsyncIterator[IngressController]:
    """The controller with its informers synced and both listeners open; closed on exit."""
    timeout = aiohttp.ClientTimeout(total=None)
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector,
                                     auto_decompress=False) as session:  # fmt: skip
        ctl = IngressController(config, session)
        tasks = [asyncio.create_task(i.run(), name=f"watch-{k}") for k, i in ctl.informers.items()]
        tasks.append(asyncio.create_task(ctl.sync(), name="sync"))
        runner = web.AppRunner(ctl.app(), access_log=None)
        try:
            await asyncio.gather(*(i.synced.wait() for i in ctl.informers.values()))
            ctl.rebuild()
            await runner.setup()
            await web.TCPSite(runner, config.listen, config.http_port).start()
            await web.TCPSite(runner, config.listen, config.https_port,
                              ssl_context=ctl.tls.context).start()  # fmt: skip
            yield ctl
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await runner.cleanup()
            ctl.tls.close()
