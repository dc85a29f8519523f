"""``/apis/metrics.k8s.io/v1beta1`` over HTTP: asks the node agents for their summaries
(``/stats/summary`` on the kubelet port, in parallel, each bounded by a timeout) and answers
with ``metrics_api.py``'s objects.  A node that does not answer is left out, as
metrics-server leaves out nodes it cannot scrape."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
from aiohttp import web

from knemu.apiserver.rest import metrics_api
from knemu.apiserver.rest.proxy import kubelet_address
from knemu.apiserver.rest.status import status_failure
from knemu.apiserver.storage.store import Store
from knemu.errors import KnemuError, NotFound

log = logging.getLogger(__name__)
Obj = dict[str, Any]
SCRAPE_TIMEOUT_S = 5.0
BASE = "/apis/" + metrics_api.GROUP_VERSION


class MetricsApi:
    def __init__(self, store: Store) -> None:
        self.store = store

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(BASE + "/nodes", self._nodes)
        app.router.add_get(BASE + "/nodes/{name}", self._nodes)
        app.router.add_get(BASE + "/pods", self._pods)
        app.router.add_get(BASE + "/namespaces/{ns}/pods", self._pods)
        app.router.add_get(BASE + "/namespaces/{ns}/pods/{name}", self._pods)

    async def _summaries(self, nodes: list[Obj]) -> list[tuple[Obj, Obj]]:
        timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            found = await asyncio.gather(*(self._scrape(session, n) for n in nodes))
        return [(node, s) for node, s in zip(nodes, found, strict=True) if s is not None]

    @staticmethod
    async def _scrape(session: aiohttp.ClientSession, node: Obj) -> Obj | None:
        try:
            ip, port = kubelet_address(node)
            async with session.get(f"http://{ip}:{port}/stats/summary") as resp:
                resp.raise_for_status()
                body: Obj = await resp.json()
                return body
        except (KnemuError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.info("no metrics from node %s: %s", node["metadata"]["name"], exc)
            return None

    async def _nodes(self, request: web.Request) -> web.Response:
        name = request.match_info.get("name")
        nodes = self.store.list("Node")
        if name is not None:
            nodes = [n for n in nodes if n["metadata"]["name"] == name]
        items = [metrics_api.node_metrics(s, n) for n, s in await self._summaries(nodes)]
        if name is None:
            return web.json_response(metrics_api.metrics_list("NodeMetrics", items))
        if not items:
            return _not_found(f'nodemetrics.metrics.k8s.io "{name}" not found')
        return web.json_response(items[0])

    async def _pods(self, request: web.Request) -> web.Response:
        ns, name = request.match_info.get("ns"), request.match_info.get("name")
        pods = self.store.list("Pod", ns)
        if name is not None:
            pods = [p for p in pods if p["metadata"]["name"] == name]
        node_names = {(p.get("spec") or {}).get("nodeName") for p in pods}
        nodes = [n for n in self.store.list("Node") if n["metadata"]["name"] in node_names]
        summaries = [s for _, s in await self._summaries(nodes)]
        try:
            selector = request.query.get("labelSelector", "")
            items = metrics_api.pod_metrics(summaries, pods, selector)
        except KnemuError as err:
            return web.json_response(status_failure(err), status=err.http_status,
                                     dumps=json.dumps)  # fmt: skip
        if name is None:
            return web.json_response(metrics_api.metrics_list("PodMetrics", items))
        if not items:
            return _not_found(f'podmetrics.metrics.k8s.io "{ns}/{name}" not found')
        return web.json_response(items[0])


def _not_found(message: str) -> web.Response:
    return web.json_response(status_failure(NotFound(message)), status=404, dumps=json.dumps)
