"""``GET /stats/summary`` on the agent's kubelet port: the kubelet Summary API subset the
metrics API needs (node and per-pod, per-container CPU and memory; ``podstats.py`` computes
them from /proc).  A first request waits one short interval and samples twice, so even the
first ``kubectl top`` shows a rate rather than zero.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from knemu.node_agent.runtime.pods import PodHandle
from knemu.node_agent.runtime.podstats import Proc, Sampler, Usage, parse_rss, parse_stat, tree

FIRST_WINDOW_S = 0.5  # the interval of the first rate
STALE_AFTER_S = 60.0  # a previous sample older than this is not used for the rate
Obj = dict[str, Any]


class PodSource(Protocol):
    def pods(self) -> list[PodHandle]: ...

    def container_pids(self, key: str) -> dict[str, int]: ...


def read_procs(proc: Path = Path("/proc")) -> dict[int, Proc]:
    """Every process of this PID namespace; processes that exit mid-read are skipped."""
    found = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = parse_stat((entry / "stat").read_text())
            rss = parse_rss((entry / "status").read_text())
        except OSError:
            continue
        if stat is not None:
            found[stat[0]] = Proc(stat[0], stat[1], stat[2], rss)
    return found


def _figures(usage: Usage, stamp: str) -> Obj:
    return {
        "cpu": {"time": stamp, "usageNanoCores": usage.nano_cores,
                "usageCoreNanoSeconds": usage.cpu_ns, "windowSeconds": usage.window_s},
        "memory": {"time": stamp, "workingSetBytes": usage.memory_bytes,
                   "rssBytes": usage.memory_bytes},
    }  # fmt: skip


class StatsApi:
    def __init__(self, source: Callable[[], PodSource], node_name: Callable[[], str]) -> None:
        self._source = source
        self._node = node_name
        self._sampler = Sampler(ticks_per_s=os.sysconf("SC_CLK_TCK"))
        self._lock = asyncio.Lock()

    async def handle(self, request: web.Request) -> web.Response:
        async with self._lock:  # one sampler: concurrent scrapes would halve each window
            return web.json_response(await self.summary())

    def _trees(self) -> dict[str, tuple[PodHandle | None, str, int]]:
        """name -> (pod, container, root pid); "" names the node (the agent's own tree)."""
        source = self._source()
        roots: dict[str, tuple[PodHandle | None, str, int]] = {"": (None, "", os.getpid())}
        for handle in source.pods():
            for container, pid in source.container_pids(handle.key).items():
                roots[f"{handle.key}/{container}"] = (handle, container, pid)
        return roots

    async def summary(self) -> Obj:
        roots = self._trees()
        if not self._sampler.has_recent(roots, time.time(), STALE_AFTER_S):
            self._sample(roots, read_procs(), time.time())
            await asyncio.sleep(FIRST_WINDOW_S)
        now = time.time()
        usages = self._sample(roots, read_procs(), now)
        self._sampler.forget_except(roots)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        pods: dict[str, Obj] = {}
        for name, (handle, container, _) in roots.items():
            if handle is None:
                continue
            ns, pod_name = handle.key.split("/", 1)
            entry = pods.setdefault(handle.key, {
                "podRef": {"name": pod_name, "namespace": ns, "uid": handle.uid},
                "containers": [],
            })  # fmt: skip
            entry["containers"].append({"name": container, **_figures(usages[name], stamp)})
        return {
            "node": {"nodeName": self._node(), **_figures(usages[""], stamp)},
            "pods": list(pods.values()),
        }

    def _sample(
        self, roots: dict[str, tuple[PodHandle | None, str, int]], procs: dict[int, Proc],
        now: float,
    ) -> dict[str, Usage]:  # fmt: skip
        return {name: self._sampler.usage(name, tree(pid, procs), now)
                for name, (_, _, pid) in roots.items()}  # fmt: skip
