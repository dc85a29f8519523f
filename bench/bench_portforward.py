"""Throughput of ``kubectl port-forward`` through knemu's api-server, per transport.

    PYTHONPATH=src python bench/bench_portforward.py [--mib 64] [--rounds 3]

An api-server runs in this process (``knemu.testing.apiserver_inprocess``) with a real agent
API (``KubeletApi``) whose pod ``default/p`` is a TCP source on loopback that sends MIB MiB to
each connection and closes.  kubectl (from PATH) forwards a local port to the pod over
(websocket) SPDY/3.1 tunnelled in a websocket, kubectl's default since 1.31, and
(spdy)      the SPDY/3.1 upgrade (KUBECTL_PORT_FORWARD_WEBSOCKETS=false);
each connection is one stream pair at the api-server and one agent websocket behind it.
(direct) reads the source itself, the ceiling.  Each figure is the best of R rounds; every
read gives up after 60 s.  Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from knemu.node_agent.dataplane.faults import Impairments
from knemu.node_agent.dataplane.flows import FlowLog
from knemu.node_agent.kubelet.api import KubeletApi
from knemu.node_agent.kubelet.capture import CaptureTaps
from knemu.testing import apiserver_inprocess, free_port

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{{name: bench, cluster: {{server: "{server}"}}}}]
users: [{{name: bench, user: {{}}}}]
contexts: [{{name: bench, context: {{cluster: bench, user: bench}}}}]
current-context: bench
"""
CHUNK = bytes(256 * 1024)


async def _source(size: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sent = 0
    while sent < size:
        writer.write(CHUNK[: size - sent])
        sent += len(CHUNK[: size - sent])
        await writer.drain()
    writer.close()


async def _read_all(port: int, size: int) -> float:
    """Seconds to read ``size`` bytes from 127.0.0.1:port (until EOF)."""
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    got = 0
    while chunk := await asyncio.wait_for(reader.read(1 << 20), 60):
        got += len(chunk)
    writer.close()
    if got != size:
        raise RuntimeError(f"read {got} bytes of {size}")
    return time.perf_counter() - start


def _objects(agent_port: int, pod_port: int) -> list[dict[str, Any]]:
    """A Node whose kubelet is the agent API, and the pod it runs, listening on pod_port."""
    addresses = [{"type": "InternalIP", "address": "127.0.0.1"}]
    endpoint = {"kubeletEndpoint": {"Port": agent_port}}
    container = {"name": "main", "image": "tools", "ports": [{"containerPort": pod_port}]}
    # The node sends no heartbeats: tolerate the unreachable taint, or the pod is evicted.
    forever = [{"key": f"node.kubernetes.io/{key}", "operator": "Exists", "effect": "NoExecute"}
               for key in ("unreachable", "not-ready")]  # fmt: skip
    return [
        {"kind": "Node", "apiVersion": "v1", "metadata": {"name": "node-1"},
         "status": {"addresses": addresses, "daemonEndpoints": endpoint}},
        {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p", "namespace": "default"},
         "spec": {"nodeName": "node-1", "containers": [container], "tolerations": forever},
         "status": {"phase": "Running"}},
    ]  # fmt: skip


async def main(mib: int, rounds: int) -> None:
    size = mib << 20
    source = await asyncio.start_server(lambda r, w: _source(size, r, w), "127.0.0.1", 0)
    pod_port = source.sockets[0].getsockname()[1]
    pods = SimpleNamespace(handles={"default/p": SimpleNamespace(ip="127.0.0.1", uid="u")},
                           runtime=None)  # fmt: skip
    agent = KubeletApi(
        "node-1", pods, FlowLog(), Impairments(), table=dict, metrics=str, cni=lambda: None,
        inject=lambda key, packet, now: None, captures=CaptureTaps(lambda: None, {}),
    )  # fmt: skip
    await agent.start("127.0.0.1", 0)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            async with apiserver_inprocess(tmp) as server:
                for obj in _objects(agent.port, pod_port):
                    server.store.create(obj, time.time())
                kubeconfig = Path(tmp) / "kubeconfig"
                kubeconfig.write_text(KUBECONFIG.format(server=server.rest_url))
                results = {"direct": min([await _read_all(pod_port, size) for _ in range(rounds)])}
                for transport in ("websocket", "spdy"):
                    results[transport] = await _forward(kubeconfig, transport, size, rounds,
                                                        pod_port)  # fmt: skip
    finally:
        await agent.stop()
        source.close()
    print(f"{mib} MiB per connection, best of {rounds}")
    for name, seconds in results.items():
        print(
            f"  {name:10s} {mib / seconds:8.1f} MiB/s  {results['direct'] / seconds:6.3f} x direct"
        )


async def _forward(kubeconfig: Path, transport: str, size: int, rounds: int, port: int) -> float:
    local = free_port()
    env = {**os.environ, "KUBECTL_PORT_FORWARD_WEBSOCKETS": str(transport == "websocket").lower()}
    proc = await asyncio.create_subprocess_exec(
        "kubectl", "--kubeconfig", str(kubeconfig), "port-forward", "--address", "127.0.0.1",
        "pod/p", f"{local}:{port}", env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if b"Forwarding from" not in line:
            raise RuntimeError(f"kubectl port-forward said {line!r}")
        return min([await _read_all(local, size) for _ in range(rounds)])
    finally:
        proc.terminate()
        await proc.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("kubectl") is None:
        raise SystemExit("kubectl is not on PATH: install it to run this benchmark")
    asyncio.run(main(args.mib, args.rounds))
