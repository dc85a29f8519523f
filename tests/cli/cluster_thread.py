"""A real api-server (subprocess) plus FakeNodes, hosted on an event loop in a thread.

The CLI is synchronous (``main(argv)``), so tests call it directly while the fake kubelets
keep running on their own loop, as they would on real nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from knemu.testing import apiserver_process, fake_cluster, write_kubeconfig


@dataclass(frozen=True)
class Cluster:
    rest_url: str
    grpc_target: str
    log_path: Path
    kubeconfig: Path  # the admin's; $KUBECONFIG names it while the cluster runs


@contextlib.contextmanager
def cluster_in_thread(tmp_path: Path, nodes: int) -> Iterator[Cluster]:
    """The cluster, with ``$KUBECONFIG`` naming its admin kubeconfig (restored on exit), so
    ``main([...])`` and ``ApiClient(url)`` authenticate as a user's kubectl would."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="kt-cluster", daemon=True)
    thread.start()
    stack = contextlib.AsyncExitStack()

    async def start() -> Cluster:
        api = await stack.enter_async_context(apiserver_process(tmp_path))
        if nodes:
            await stack.enter_async_context(fake_cluster(api, nodes=nodes))
        kubeconfig = write_kubeconfig(api.admin, tmp_path / "kubeconfig")
        return Cluster(api.rest_url, api.grpc_target, api.log_path, kubeconfig)

    saved = os.environ.get("KUBECONFIG")
    try:
        cluster = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=60)
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
        yield cluster
    finally:
        if saved is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = saved
        asyncio.run_coroutine_threadsafe(stack.aclose(), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
