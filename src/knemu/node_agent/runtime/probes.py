"""Readiness and liveness probes, run from inside the pod's network namespace.

Semantics follow "Configure Liveness, Readiness and Startup Probes"
(https://kubernetes.io/docs/tasks/configure-pod-container/configure-liveness-readiness-startup-probes/):
defaults period 10 s, timeout 1 s, successThreshold 1, failureThreshold 3, initialDelay 0;
httpGet succeeds on a status in [200, 400), tcpSocket on an established connection, exec on
exit code 0.  A readiness result starts at failure, a liveness result at success.

The kubelet probes the pod IP from the node.  Here the probe socket is created INSIDE the pod
namespace (a short-lived thread ``setns``-es into it, makes the socket and returns), then
used from the event loop, so probes need neither the router nor a route from the node.
``ProbeTracker`` is the sans-I/O threshold logic.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from knemu.proto import knemu_pb2 as pb

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class ProbeSpec:
    kind: str  # http_get | tcp_socket | exec
    port: str = ""
    path: str = "/"
    host: str = ""
    scheme: str = "HTTP"
    command: tuple[str, ...] = ()
    initial_delay_s: float = 0.0
    period_s: float = 10.0
    timeout_s: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    @classmethod
    def from_pb(cls, probe: pb.Probe) -> ProbeSpec:
        """Proto3 zeros mean "not set": they take the Kubernetes defaults."""
        kind = probe.WhichOneof("handler") or ""
        if kind not in ("http_get", "tcp_socket", "exec"):
            raise ValueError("probe has no httpGet, tcpSocket or exec handler")
        return cls(
            kind=kind,
            port=probe.http_get.port if kind == "http_get" else probe.tcp_socket.port,
            path=probe.http_get.path or "/",
            host=probe.http_get.host,
            scheme=(probe.http_get.scheme or "HTTP").upper(),
            command=tuple(probe.exec.command),
            initial_delay_s=float(probe.initial_delay_s),
            period_s=float(probe.period_s or 10),
            timeout_s=float(probe.timeout_s or 1),
            success_threshold=probe.success_threshold or 1,
            failure_threshold=probe.failure_threshold or 3,
        )


class ProbeTracker:
    """Consecutive-result thresholds of one probe for one container start (sans-I/O)."""

    def __init__(self, spec: ProbeSpec, started: float, initial: bool) -> None:
        self.spec = spec
        self.result = initial
        self._next = started + spec.initial_delay_s
        self._successes = 0
        self._failures = 0

    def next_due(self) -> float:
        return self._next

    def record(self, ok: bool, now: float) -> bool:
        """Count one outcome; True when the probe's result flipped."""
        self._next = now + self.spec.period_s
        if ok:
            self._successes, self._failures = self._successes + 1, 0
            flip = not self.result and self._successes >= self.spec.success_threshold
        else:
            self._successes, self._failures = 0, self._failures + 1
            flip = self.result and self._failures >= self.spec.failure_threshold
        if flip:
            self.result = ok
        return flip


class StartupTracker:
    """A startup probe for one container start (sans-I/O): ``record`` answers "started"
    after success_threshold successes (1 for startup probes in Kubernetes), "failed" after
    failure_threshold consecutive failures (the kubelet then kills and restarts it), else
    None; liveness and readiness probes wait until it has started."""

    def __init__(self, spec: ProbeSpec, started: float) -> None:
        self.spec = spec
        self._next = started + spec.initial_delay_s
        self._failures = 0

    def next_due(self) -> float:
        return self._next

    def record(self, ok: bool, now: float) -> str | None:
        self._next = now + self.spec.period_s
        if ok:
            return "started"
        self._failures += 1
        return "failed" if self._failures >= self.spec.failure_threshold else None


def resolve_port(port: str, container: pb.Container) -> int:
    """A probe port: a number or the name of one of the container's ports."""
    if port.isdigit():
        return int(port)
    for p in container.ports:
        if p.name == port:
            return p.container_port
    raise ValueError(f"probe port {port!r} is not a number nor a named port of {container.name}")


def socket_in_netns(netns_path: str, family: int, kind: int) -> socket.socket:
    """A socket that belongs to the network namespace at ``netns_path``.

    setns(2) changes only the calling thread, so a fresh thread switches, creates the socket
    and ends; the socket keeps its namespace wherever it is used afterwards.
    """
    box: dict[str, socket.socket | BaseException] = {}

    def work() -> None:
        try:
            with open(netns_path, "rb") as f:
                if _libc.setns(f.fileno(), CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({netns_path}): {os.strerror(err)}")
            box["sock"] = socket.socket(family, kind)
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=work, name="knemu-netns-socket")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    sock = box["sock"]
    assert isinstance(sock, socket.socket)
    sock.setblocking(False)
    return sock


async def connect_in_netns(
    netns_path: str, host: str, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    # Blocks only while a thread starts, switches namespace and makes one socket.
    sock = socket_in_netns(netns_path, socket.AF_INET, socket.SOCK_STREAM)
    try:
        await loop.sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


async def http_get(netns_path: str, host: str, port: int, path: str) -> tuple[bool, str]:
    reader, writer = await connect_in_netns(netns_path, host, port)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/knemu\r\n"
            "Accept: */*\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        status_line = (await reader.readline()).decode("latin-1").strip()
    finally:
        writer.close()
    parts = status_line.split(" ")
    if len(parts) < 2 or not parts[1].isdigit():
        return False, f"HTTP probe to {host}:{port}{path} got {status_line!r}"
    code = int(parts[1])
    return 200 <= code < 400, f"HTTP probe failed with statuscode: {code}"


async def tcp_connect(netns_path: str, host: str, port: int) -> tuple[bool, str]:
    _, writer = await connect_in_netns(netns_path, host, port)
    writer.close()
    return True, ""


RunExec = Callable[[list[str]], Awaitable[int]]


async def run_probe(
    spec: ProbeSpec, container: pb.Container, netns_path: str, pod_ip: str, run_exec: RunExec
) -> tuple[bool, str]:
    """One probe attempt with its timeout: (success, message for the event when it failed)."""
    try:
        async with asyncio.timeout(spec.timeout_s):
            if spec.kind == "exec":
                code = await run_exec(list(spec.command))
                return code == 0, f"exec probe {list(spec.command)} exited {code}"
            port = resolve_port(spec.port, container)
            host = spec.host or pod_ip
            if spec.kind == "tcp_socket":
                return await tcp_connect(netns_path, host, port)
            if spec.scheme != "HTTP":
                return False, f"probe scheme {spec.scheme} is not supported by knemu; use HTTP"
            return await http_get(netns_path, host, port, spec.path)
    except TimeoutError:
        return False, f"{spec.kind} probe timed out after {spec.timeout_s:g}s"
    except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
        return False, f"{spec.kind} probe failed: {exc}"


async def probe_loop(
    tracker: ProbeTracker,
    attempt: Callable[[], Awaitable[tuple[bool, str]]],
    on_flip: Callable[[bool, str], None],
) -> None:
    """Probe forever at the tracker's pace; call ``on_flip`` when the result changes."""
    loop = asyncio.get_running_loop()
    while True:
        delay = tracker.next_due() - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        ok, message = await attempt()
        if tracker.record(ok, loop.time()):
            on_flip(ok, message)
