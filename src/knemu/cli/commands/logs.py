"""``knemu logs`` and what every command that reads a container's output shares.

Logs come from ``/api/v1/namespaces/{ns}/pods/{pod}/log`` (the api-server proxies the node's
kubelet API, as ``kubectl logs`` does).  ``follow_until_ended`` streams a followed log until the
container terminates, which ``knemu run -i`` uses too; ``pick_container`` chooses the container
as kubectl does (the only one, else ``-c``, else the first with a note on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

import aiohttp

from knemu.cli.client import ApiClient, Obj, StatusError, resolve_kind
from knemu.errors import LocalError, RemoteError

PODS = resolve_kind("pods")
LOG_DRAIN_S = 1.0  # after the container ended, how long its log stream may still deliver


def write_bytes(stream: TextIO, data: bytes) -> None:
    """Write raw bytes to a text stream's buffer when it has one (keeps binary output intact)."""
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        stream.write(data.decode("utf-8", "replace"))
        return
    stream.flush()
    buffer.write(data)
    buffer.flush()


def pick_container(pod: Obj, wanted: str | None) -> str:
    """The container ``-c`` names (checked), else the pod's first one."""
    names = [str(c.get("name", "")) for c in (pod.get("spec") or {}).get("containers") or []]
    pod_name = pod["metadata"]["name"]
    if wanted:
        if wanted not in names:
            raise LocalError(
                f"container {wanted} is not valid for pod {pod_name}; "
                f"its containers are: {', '.join(names)}"
            )
        return wanted
    if not names:
        raise LocalError(f"pod {pod_name} has no containers")
    if len(names) > 1:
        print(f'Defaulted container "{names[0]}" out of: {", ".join(names)}', file=sys.stderr)
    return names[0]


def container_state(pod: Obj, container: str | None = None) -> Obj:
    """State of the named container (default: the first), {} before it has one."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
    named = [s for s in statuses if container is None or s.get("name") == container]
    return (named or [{}])[0].get("state") or {}


def container_ended(container: str | None) -> Callable[[Obj], bool]:
    """Predicate: the container has terminated (or the whole pod has)."""

    def check(pod: Obj) -> bool:
        phase = (pod.get("status") or {}).get("phase")
        return "terminated" in container_state(pod, container) or phase in ("Succeeded", "Failed")

    return check


def logs_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pod", help="pod name (or pod/NAME)")
    parser.add_argument("-c", "--container", default=None)
    parser.add_argument("-f", "--follow", action="store_true", help="keep streaming new output")
    parser.add_argument("--tail", type=int, default=-1, help="lines from the end (-1: all)")
    parser.add_argument("-p", "--previous", action="store_true",
                        help="the previous (terminated) run of a restarted container")  # fmt: skip


def stream_logs(
    client: ApiClient, namespace: str, pod: str, container: str, follow: bool, tail: int = -1,
    previous: bool = False,
) -> None:  # fmt: skip
    query = {"container": container, "follow": "true" if follow else "false"}
    if previous:
        query["previous"] = "true"
    if tail >= 0:
        query["tailLines"] = str(tail)
    for chunk in client.stream(client.pod_log_path(namespace, pod), query):
        write_bytes(sys.stdout, chunk)


def logs_run(args: argparse.Namespace) -> int:
    client: ApiClient = args.client
    namespace = args.namespace or "default"
    name = args.pod.removeprefix("pod/").removeprefix("pods/")
    pod = client.get(PODS, namespace, name)
    container = pick_container(pod, args.container)
    if args.previous:
        stream_logs(client, namespace, name, container, False, args.tail, previous=True)
    elif args.follow and not container_ended(container)(pod):
        # Ends when the container does, even if the node keeps the stream open.
        asyncio.run(follow_until_ended(client, namespace, name, container, args.tail))
    else:
        stream_logs(client, namespace, name, container, False, args.tail)
    return 0


async def follow_until_ended(
    client: ApiClient, namespace: str, name: str, container: str, tail: int = -1
) -> Obj:
    """Stream the container's output until it terminates; returns the terminated pod.

    A followed log normally ends when the container exits (kubelet closes it); if it does not,
    the pod's own status says so, and the stream gets LOG_DRAIN_S to deliver its last bytes.
    """
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[Obj] = loop.create_future()

    def settle(result: Obj | None, error: BaseException | None) -> None:
        if ended.done():
            return
        if error is not None:
            ended.set_exception(error)
        else:
            ended.set_result(result or {})

    def waiter() -> None:  # a daemon thread: never holds up the exit on Ctrl-C
        try:
            pod = client.wait_for(PODS, namespace, name, container_ended(container), None)
            loop.call_soon_threadsafe(settle, pod, None)
        except Exception as exc:  # handed to the event loop, raised by `await ended`
            loop.call_soon_threadsafe(settle, None, exc)

    threading.Thread(target=waiter, name=f"wait {name}", daemon=True).start()
    url = client.server + client.pod_log_path(namespace, name)
    params = {"container": container, "follow": "true"}
    if tail >= 0:
        params["tailLines"] = str(tail)
    logs = asyncio.create_task(_follow_logs(client, url, params))
    either: set[asyncio.Future[Any]] = {logs, ended}
    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    if not logs.done():
        await asyncio.wait({logs}, timeout=LOG_DRAIN_S)
        logs.cancel()
    elif logs.exception() is not None:
        raise logs.exception()  # type: ignore[misc]
    return await ended


async def _follow_logs(client: ApiClient, url: str, params: dict[str, str]) -> None:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10.0)
    async with aiohttp.ClientSession(timeout=timeout, **client.session_options()) as session:
        try:
            async with session.get(url, params=params) as resp:
                if resp.status != 200:
                    raise StatusError.from_body(resp.status, await resp.read())
                async for chunk in resp.content.iter_any():
                    write_bytes(sys.stdout, chunk)
        except aiohttp.ClientError as exc:
            raise RemoteError(f"the log stream of {url} broke: {exc}") from None
