"""``knemu exec``: run a command in a container over the Kubernetes channel protocol.

exec opens a websocket to ``/api/v1/namespaces/{ns}/pods/{pod}/exec`` speaking the Kubernetes
channel protocol of docs/INTERFACES.md (``v4.channel.k8s.io``: the first byte of each binary
message is the stream, 0 stdin, 1 stdout, 2 stderr, 3 a ``Status`` JSON carrying the exit code;
stdin is closed with ``[255, 0]`` as in ``v5.channel.k8s.io``).

``knemu attach`` (``commands.attach``) uses the same session over ``.../attach``; ``knemu run``
and ``knemu logs`` live in ``commands.run`` and ``commands.logs``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import sys
import threading
from typing import TextIO

import aiohttp

from knemu.cli.client import REASONS, ApiClient, Obj
from knemu.cli.commands.logs import PODS, pick_container, write_bytes
from knemu.errors import LocalError, RemoteError

__all__ = ["StreamRefused", "exec_add_arguments", "exec_run", "exec_stream", "exit_code_of"]

STDIN, STDOUT, STDERR, STATUS = 0, 1, 2, 3
CLOSE_STREAM = 255  # v5.channel.k8s.io: [255, channel] closes that channel
PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")


class StreamRefused(RemoteError):
    """The session was not opened (refused upgrade, no connection): nothing was streamed."""


def exit_code_of(status: Obj, what: str = "exec") -> int:
    """Exit code from the channel-3 Status (Success -> 0, NonZeroExitCode -> its ExitCode)."""
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message", "1"))
            except ValueError:
                return 1
    raise RemoteError(f"{what} failed: {status.get('message') or status.get('reason') or status}")


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
    container = pick_container(pod, args.container)
    query = [("command", c) for c in command] + [
        ("container", container),
        ("stdin", "1" if args.stdin else "0"),
        ("stdout", "1"),
        ("stderr", "1"),
    ]
    url = f"{client.server}/api/v1/namespaces/{namespace}/pods/{name}/exec"
    return asyncio.run(exec_stream(client, url, query, sys.stdin if args.stdin else None))


async def exec_stream(
    client: ApiClient,
    url: str,
    query: list[tuple[str, str]],
    stdin: TextIO | None,
    what: str = "exec",
) -> int:
    """Run one exec (or attach) session; stdout/stderr go to ours; the remote exit code."""
    timeout = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0)
    async with aiohttp.ClientSession(**client.session_options()) as session:
        try:
            ws = await session.ws_connect(url, params=query, protocols=PROTOCOLS, timeout=timeout)
        except aiohttp.WSServerHandshakeError as exc:
            # aiohttp drops the Status body of a refused upgrade; say what usually causes it.
            reason = REASONS.get(exc.status, "Unknown")
            raise StreamRefused(
                f"{what} refused by the api-server (HTTP {exc.status} {reason}): the pod's node "
                "agent is unreachable or refused it; check `knemu get nodes` and "
                "`knemu logs POD`"
            ) from None
        except aiohttp.ClientConnectionError as exc:
            raise StreamRefused(f"cannot reach the api-server for {what} at {url}: {exc}") from None
        async with ws:
            feeder = asyncio.create_task(_feed_stdin(ws, stdin)) if stdin else None
            try:
                return await _pump_output(ws, what)
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
    read1 = getattr(getattr(stdin, "buffer", None), "read1", None)  # bytes as they come
    while True:
        try:
            chunk = read1(65536) if read1 is not None else stdin.read(65536).encode()
        except (OSError, ValueError):  # stdin closed or unreadable: for the remote side, EOF
            chunk = b""
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


async def _pump_output(ws: aiohttp.ClientWebSocketResponse, what: str) -> int:
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
            return exit_code_of(json.loads(data[1:] or b"{}"), what)
        if data[0] in sinks:
            write_bytes(sinks[data[0]], data[1:])
    raise RemoteError(f"the {what} stream ended without an exit status (the node went away?)")
