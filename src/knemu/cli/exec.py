"""``knemu exec``, ``knemu logs`` and ``knemu run``: talking to containers through the api-server.

exec opens a websocket to ``/api/v1/namespaces/{ns}/pods/{pod}/exec`` speaking the Kubernetes
channel protocol of docs/INTERFACES.md (``v4.channel.k8s.io``: the first byte of each binary
message is the stream, 0 stdin, 1 stdout, 2 stderr, 3 a ``Status`` JSON carrying the exit code;
stdin is closed with ``[255, 0]`` as in ``v5.channel.k8s.io``).  logs reads
``/api/v1/namespaces/{ns}/pods/{pod}/log``.  run creates a pod as ``kubectl run`` does
(https://kubernetes.io/docs/reference/kubectl/generated/kubectl_run/), waits for it by watching
it, streams its output until it ends and exits with its container's exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

import aiohttp

from knemu.cli.client import REASONS, ApiClient, Obj, StatusError, resolve_kind
from knemu.errors import LocalError, RemoteError

STDIN, STDOUT, STDERR, STATUS = 0, 1, 2, 3
CLOSE_STREAM = 255  # v5.channel.k8s.io: [255, channel] closes that channel
PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
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


def exit_code_of(status: Obj) -> int:
    """Exit code from the channel-3 Status (Success -> 0, NonZeroExitCode -> its ExitCode)."""
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message", "1"))
            except ValueError:
                return 1
    raise RemoteError(f"exec failed: {status.get('message') or status.get('reason') or status}")


def _container(pod: Obj, wanted: str | None) -> str:
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


# -- exec -------------------------------------------------------------------------------------


def exec_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pod", help="pod name (or pod/NAME)")
    parser.add_argument("legacy_command", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("-c", "--container", default=None)
    parser.add_argument("-i", "--stdin", action="store_true", help="pass stdin to the container")
    parser.add_argument("-t", "--tty", action="store_true", help="accepted; knemu has no TTYs")


def exec_run(args: argparse.Namespace) -> int:
    client: ApiClient = args.client
    command = getattr(args, "command", None) or args.legacy_command
    if not command:
        raise LocalError("say what to run: knemu exec POD -- COMMAND [ARGS...]")
    name = args.pod.removeprefix("pod/").removeprefix("pods/")
    namespace = args.namespace or "default"
    pod = client.get(PODS, namespace, name)
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        raise LocalError(
            f"cannot exec into a container in a completed pod; current phase is {phase}"
        )
    if not (pod.get("spec") or {}).get("nodeName"):
        raise LocalError(
            f'pod "{name}" is not scheduled to a node yet (phase {phase}); wait until it is '
            f"Running: knemu describe pod {name}"
        )
    container = _container(pod, args.container)
    query = [("command", c) for c in command] + [
        ("container", container),
        ("stdin", "1" if args.stdin else "0"),
        ("stdout", "1"),
        ("stderr", "1"),
    ]
    url = f"{client.server}/api/v1/namespaces/{namespace}/pods/{name}/exec"
    return asyncio.run(exec_stream(url, query, sys.stdin if args.stdin else None))


async def exec_stream(url: str, query: list[tuple[str, str]], stdin: TextIO | None) -> int:
    """Run one exec session; stdout/stderr go to ours; returns the remote exit code."""
    timeout = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0)
    async with aiohttp.ClientSession() as session:
        try:
            ws = await session.ws_connect(url, params=query, protocols=PROTOCOLS, timeout=timeout)
        except aiohttp.WSServerHandshakeError as exc:
            # aiohttp drops the Status body of a refused upgrade; say what usually causes it.
            reason = REASONS.get(exc.status, "Unknown")
            raise RemoteError(
                f"exec refused by the api-server (HTTP {exc.status} {reason}): the pod's node "
                "agent is unreachable or refused it; check `knemu get nodes` and "
                "`knemu logs POD`"
            ) from None
        except aiohttp.ClientConnectionError as exc:
            raise RemoteError(f"cannot reach the api-server for exec at {url}: {exc}") from None
        async with ws:
            feeder = asyncio.create_task(_feed_stdin(ws, stdin)) if stdin else None
            try:
                return await _pump_output(ws)
            finally:
                if feeder:
                    feeder.cancel()


async def _feed_stdin(ws: aiohttp.ClientWebSocketResponse, stdin: TextIO) -> None:
    """Copy stdin to channel 0, then close it with [255, 0].

    Reads happen in a daemon thread: a read blocked on a terminal must not keep the CLI alive
    after the remote command has exited (an executor thread would).
    """
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue(maxsize=16)
    threading.Thread(target=_read_stdin, args=(stdin, loop, chunks), daemon=True).start()
    while chunk := await chunks.get():
        await ws.send_bytes(bytes([STDIN]) + chunk)
    await ws.send_bytes(bytes([CLOSE_STREAM, STDIN]))


def _read_stdin(
    stdin: TextIO, loop: asyncio.AbstractEventLoop, chunks: asyncio.Queue[bytes]
) -> None:
    source = getattr(stdin, "buffer", None)
    while True:
        chunk = source.read1(65536) if source is not None else stdin.read(65536).encode()
        put = chunks.put(chunk)
        try:
            asyncio.run_coroutine_threadsafe(put, loop).result()
        except RuntimeError:  # the event loop is closed: the session is over
            put.close()
            return
        except concurrent.futures.CancelledError:  # the session ended while we waited
            return
        if not chunk:
            return


async def _pump_output(ws: aiohttp.ClientWebSocketResponse) -> int:
    sinks: dict[int, TextIO] = {STDOUT: sys.stdout, STDERR: sys.stderr}
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.BINARY:
            data: bytes = msg.data
        elif msg.type == aiohttp.WSMsgType.TEXT:
            data = msg.data.encode()
        else:
            break
        if not data:
            continue
        if data[0] == STATUS:
            return exit_code_of(json.loads(data[1:] or b"{}"))
        if data[0] in sinks:
            write_bytes(sinks[data[0]], data[1:])
    raise RemoteError("the exec stream ended without an exit status (the node went away?)")


# -- logs -------------------------------------------------------------------------------------


def logs_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pod", help="pod name (or pod/NAME)")
    parser.add_argument("-c", "--container", default=None)
    parser.add_argument("-f", "--follow", action="store_true", help="keep streaming new output")
    parser.add_argument("--tail", type=int, default=-1, help="lines from the end (-1: all)")


def stream_logs(
    client: ApiClient, namespace: str, pod: str, container: str, follow: bool, tail: int = -1
) -> None:
    query = {"container": container, "follow": "true" if follow else "false"}
    if tail >= 0:
        query["tailLines"] = str(tail)
    for chunk in client.stream(client.pod_log_path(namespace, pod), query):
        write_bytes(sys.stdout, chunk)


def logs_run(args: argparse.Namespace) -> int:
    client: ApiClient = args.client
    namespace = args.namespace or "default"
    name = args.pod.removeprefix("pod/").removeprefix("pods/")
    pod = client.get(PODS, namespace, name)
    container = _container(pod, args.container)
    if args.follow and not _ended(container)(pod):
        # Ends when the container does, even if the node keeps the stream open.
        asyncio.run(_follow_until_ended(client, namespace, name, container, args.tail))
    else:
        stream_logs(client, namespace, name, container, False, args.tail)
    return 0


# -- run --------------------------------------------------------------------------------------


def run_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="pod name")
    parser.add_argument("legacy_args", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--image", required=True, help="container image (see DESIGN: workloads)")
    parser.add_argument("--restart", choices=("Always", "OnFailure", "Never"), default="Always")
    parser.add_argument("--rm", action="store_true", help="delete the pod when it ends (needs -i)")
    parser.add_argument("-i", "--stdin", action="store_true", help="attach: stream its output")
    parser.add_argument("-t", "--tty", action="store_true", help="accepted; knemu has no TTYs")
    parser.add_argument(
        "--command",
        dest="use_command",
        action="store_true",
        help="the words after -- are the command, not args",
    )
    parser.add_argument("--env", action="append", default=[], metavar="K=V")
    parser.add_argument("--port", type=int, default=None, help="containerPort to declare")
    parser.add_argument("-l", "--labels", default="", metavar="k=v,...")
    parser.add_argument(
        "--pod-running-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="how long to wait for the pod to start",
    )


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LocalError(f"{what} {item!r} is not KEY=VALUE")
        out[key] = value
    return out


def pod_manifest(args: argparse.Namespace, namespace: str) -> Obj:
    """The Pod ``kubectl run`` would create for these flags."""
    words = list(getattr(args, "command", None) or args.legacy_args)
    container: Obj = {"name": args.name, "image": args.image}
    if words:
        container["command" if args.use_command else "args"] = words
    env = _pairs(args.env, "--env")
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    if args.port is not None:
        container["ports"] = [{"containerPort": args.port}]
    if args.stdin:
        container.update(stdin=True, stdinOnce=True)
    labels = {"run": args.name} | _pairs([p for p in args.labels.split(",") if p], "--labels")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": args.name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [container], "restartPolicy": args.restart},
    }


def run_run(args: argparse.Namespace) -> int:
    client: ApiClient = args.client
    if args.rm and not args.stdin:
        raise LocalError("--rm should only be used for attached containers: add -i")
    namespace = args.namespace or "default"
    created = client.create(PODS, namespace, pod_manifest(args, namespace))
    if not args.stdin:
        print(f"pod/{args.name} created")
        return 0
    try:
        return _attach(client, namespace, created, args.pod_running_timeout)
    finally:
        if args.rm:
            _remove(client, namespace, args.name)


def _remove(client: ApiClient, namespace: str, name: str) -> None:
    try:
        client.delete(PODS, namespace, name)
    except StatusError as exc:
        if not exc.not_found:
            raise
    print(f'pod "{name}" deleted')


def _container_state(pod: Obj, container: str | None = None) -> Obj:
    """State of the named container (default: the first), {} before it has one."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
    named = [s for s in statuses if container is None or s.get("name") == container]
    return (named or [{}])[0].get("state") or {}


def _started(pod: Obj) -> bool:
    phase = (pod.get("status") or {}).get("phase")
    state = _container_state(pod)
    return (
        phase in ("Running", "Succeeded", "Failed") or "running" in state or "terminated" in state
    )


def _ended(container: str | None) -> Callable[[Obj], bool]:
    """Predicate: the container has terminated (or the whole pod has)."""

    def check(pod: Obj) -> bool:
        phase = (pod.get("status") or {}).get("phase")
        return "terminated" in _container_state(pod, container) or phase in ("Succeeded", "Failed")

    return check


def _attach(client: ApiClient, namespace: str, created: Obj, timeout_s: float) -> int:
    name = created["metadata"]["name"]
    pod = client.wait_for(PODS, namespace, name, _started, timeout_s)
    if pod is None:
        raise LocalError(_pending_reason(client, namespace, name, timeout_s))
    container = created["spec"]["containers"][0]["name"]
    if _ended(container)(pod):
        stream_logs(client, namespace, name, container, follow=False)
    else:
        pod = asyncio.run(_follow_until_ended(client, namespace, name, container))
    terminated = _container_state(pod).get("terminated") or {}
    return int(terminated.get("exitCode", 0 if pod["status"].get("phase") == "Succeeded" else 1))


async def _follow_until_ended(
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
            pod = client.wait_for(PODS, namespace, name, _ended(container), None)
            loop.call_soon_threadsafe(settle, pod, None)
        except Exception as exc:  # handed to the event loop, raised by `await ended`
            loop.call_soon_threadsafe(settle, None, exc)

    threading.Thread(target=waiter, name=f"wait {name}", daemon=True).start()
    url = client.server + client.pod_log_path(namespace, name)
    params = {"container": container, "follow": "true"}
    if tail >= 0:
        params["tailLines"] = str(tail)
    logs = asyncio.create_task(_follow_logs(url, params))
    either: set[asyncio.Future[Any]] = {logs, ended}
    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    if not logs.done():
        await asyncio.wait({logs}, timeout=LOG_DRAIN_S)
        logs.cancel()
    elif logs.exception() is not None:
        raise logs.exception()  # type: ignore[misc]
    return await ended


async def _follow_logs(url: str, params: dict[str, str]) -> None:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10.0)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            async with session.get(url, params=params) as resp:
                if resp.status != 200:
                    raise StatusError.from_body(resp.status, await resp.read())
                async for chunk in resp.content.iter_any():
                    write_bytes(sys.stdout, chunk)
        except aiohttp.ClientError as exc:
            raise RemoteError(f"the log stream of {url} broke: {exc}") from None


def _pending_reason(client: ApiClient, namespace: str, name: str, timeout_s: float) -> str:
    """Why the pod is not running: container waiting state, false conditions, warning events."""
    pod = client.get(PODS, namespace, name)
    status = pod.get("status") or {}
    waiting = _container_state(pod).get("waiting") or {}
    why = [f"{waiting.get('reason')}: {waiting.get('message', '')}".strip()] if waiting else []
    why += [
        f"{c.get('reason') or c.get('type')}: {c['message']}"
        for c in status.get("conditions") or []
        if c.get("status") != "True" and c.get("message")
    ]
    for event in _warnings(client, namespace, name):
        text = f"{event.get('reason')}: {event.get('message')}"
        if not any(event.get("message", "") in w for w in why):
            why.append(text)
    detail = "; ".join(why) or "no events explain it (is a node agent running? knemu get nodes)"
    phase = status.get("phase", "Pending")
    return f'pod "{name}" did not start within {timeout_s:g}s (phase {phase}): {detail}'


def _warnings(client: ApiClient, namespace: str, name: str) -> list[Obj]:
    selector = f"involvedObject.kind=Pod,involvedObject.name={name}"
    try:
        events = client.list(resolve_kind("events"), namespace, field_selector=selector)
    except StatusError:
        return []
    items = [e for e in events.get("items") or [] if e.get("type") == "Warning"]
    return sorted(items, key=lambda e: str(e.get("lastTimestamp") or ""))[-3:]
