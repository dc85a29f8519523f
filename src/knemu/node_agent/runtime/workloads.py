"""Built-in workloads that stand in for images knemu cannot pull (DESIGN.md "Containers").

Run as real processes inside a pod's namespaces::

    python -m knemu.node_agent.runtime.workloads echo  --pod NAME --port 80 [--port 81 ...]
    python -m knemu.node_agent.runtime.workloads nginx --pod NAME --port 80

``echo`` answers every HTTP request with the line the ``amsy810/echo-nginx`` image returns in
seed 003 (its nginx ``return 200`` of ``$host``, ``$request_uri``, ``$hostname``,
``$remote_addr``, ``$http_x_forwarded_for``)::

    Host=<Host header without port>  Path=<request URI>  From=<pod>  ClientIP=<peer>  XFF=<XFF>

``nginx`` (for ``nginx*`` images) answers ``/`` with the same echo line, so the seed's
sample-deployment (image nginx:1.16) shows which pod served a request when load balanced,
serves the stock nginx welcome page on ``/index.html`` and 404 elsewhere.  Both speak
HTTP/1.1 with keep-alive (RFC 9112) and also answer UDP datagrams on the same ports with
``From=<pod> ClientIP=<peer>\\n`` for UDP service tests.  Only asyncio streams are used, to
keep each pod's process small.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:  # only for types: the workload processes must not load protobuf
    from knemu.proto import knemu_pb2 as pb

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
IDLE_TIMEOUT_S = 75.0  # nginx keepalive_timeout default
SERVER = "nginx/1.16.1 (knemu)"
WELCOME_PAGE = """<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the nginx web server is successfully installed and
working. Further configuration is required.</p>
<p><em>Thank you for using nginx.</em> (served by knemu)</p>
</body>
</html>
"""


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    version: str  # "HTTP/1.1"
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "

    @property
    def keep_alive(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in conn
        return "close" not in conn


class BadRequest(ValueError):
    pass


def parse_head(head: bytes) -> Request:
    """Parse a request line and header fields (RFC 9112 sections 3 and 5)."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes every byte
        raise BadRequest(str(exc)) from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(f"bad request line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(f"bad header line {line!r}")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return Request(parts[0], parts[1], parts[2], headers)


def request_host(req: Request, local_ip: str) -> str:
    """nginx ``$host``: request-line host, else Host header, lower case, without the port."""
    target = req.target
    if "://" in target:
        host = target.split("://", 1)[1].split("/", 1)[0]
    else:
        host = req.headers.get("host", "") or local_ip
    if host.startswith("["):
        return host[: host.find("]") + 1].lower()
    return host.rsplit(":", 1)[0].lower() if ":" in host else host.lower()


def request_uri(req: Request) -> str:
    """nginx ``$request_uri``: the path and query as sent (absolute-form reduced to its path)."""
    target = req.target
    if "://" in target:
        rest = target.split("://", 1)[1]
        return "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    return target


def echo_line(req: Request, pod: str, client_ip: str, local_ip: str) -> str:
    """The seed 003 echo line (two spaces between fields, newline at the end)."""
    return (
        f"Host={request_host(req, local_ip)}  Path={request_uri(req)}  From={pod}  "
        f"ClientIP={client_ip}  XFF={req.headers.get('x-forwarded-for', '')}\n"
    )


def respond(
    mode: str, req: Request, pod: str, client_ip: str, local_ip: str
) -> tuple[int, str, str]:
    """(status, content type, body) for one request."""
    path = request_uri(req).split("?", 1)[0]
    if mode == "echo" or path == "/":
        return 200, "text/plain", echo_line(req, pod, client_ip, local_ip)
    if path == "/index.html":
        return 200, "text/html", WELCOME_PAGE
    return 404, "text/html", "<html><body><h1>404 Not Found</h1></body></html>\n"


def render_response(status: int, ctype: str, body: bytes, keep_alive: bool, head: bool) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 413: "Payload Too Large"}
    lines = [
        f"HTTP/1.1 {status} {reason.get(status, 'OK')}",
        f"Server: {SERVER}",
        f"Content-Type: {ctype}",
        f"Content-Length: {len(body)}",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
    ]
    out = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return out if head else out + body


def access_log_line(req: Request, peer: str, status: int, size: int) -> str:
    """One line per request in nginx's default "combined" log format, so `knemu logs` shows
    which client reached which pod (the client address is what the pod saw, after any NAT)."""
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
    agent = req.headers.get("user-agent", "-")
    target = request_uri(req)
    return (
        f'{peer} - - [{stamp}] "{req.method} {target} {req.version}" {status} {size} "-" "{agent}"'
    )


def udp_reply(pod: str, client_ip: str) -> bytes:
    return f"From={pod} ClientIP={client_ip}\n".encode()


# ---- which image runs what (used by the agent, never by the workload processes) ------

# Images cannot be pulled, so ``plan_container`` maps a container spec to what runs
# (DESIGN.md "Containers"):
#
# * ``command`` given -> that command with ``args`` (Kubernetes: command replaces ENTRYPOINT,
#   args replace CMD), run for real; curl, dig, iperf3 are on the node.
# * ``*echo*`` images (``amsy810/echo-nginx``, ``knemu/echo``) -> the echo workload on
#   ``$NGINX_PORT``, else each containerPort, else 80 (seed 003).
# * ``nginx*`` -> the nginx workload on each containerPort (default 80).
# * tools images (``amsy810/tools``, ``busybox``, ``alpine``, ``*tools*``, ...) -> ``args`` if
#   given, else ``sleep infinity``.
# * anything else -> never runs: waiting with reason ErrImagePull and a message saying what to do.

TOOLS_NAMES = ("busybox", "alpine", "ubuntu", "debian", "centos", "fedora", "curl", "netshoot")


@dataclass(frozen=True)
class ContainerPlan:
    """What runs for a container: argv, or why nothing can."""

    argv: tuple[str, ...] = ()
    builtin: str = ""  # "echo" | "nginx" | "knemu" (python -m knemu.X) | "" (command or tools)
    ports: tuple[int, ...] = ()  # where a built-in workload listens (TCP and UDP)
    error: str = ""  # non-empty: cannot emulate (waiting ErrImagePull)


def image_repository(image: str) -> str:
    """``registry/ns/name:tag@digest`` -> ``registry/ns/name`` (lower case)."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]
    return name.lower()


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand_vars(text: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion in command/args/env: ``$$`` is a literal ``$``,
    a reference to an undefined variable stays as written (kubernetes/third_party expansion)."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR_REF.sub(sub, text)


def container_ports(container: pb.Container) -> list[int]:
    return [
        p.container_port
        for p in container.ports
        if p.container_port and (p.protocol or "TCP").upper() in ("TCP", "UDP")
    ]


def plan_container(container: pb.Container, pod_name: str, env: dict[str, str]) -> ContainerPlan:
    """Decide what to run for ``container`` (see the module docstring for the rules)."""
    command = [expand_vars(c, env) for c in container.command]
    args = [expand_vars(a, env) for a in container.args]
    if command:
        argv = command + args
        if _is_knemu_module(argv):
            # `python -m knemu.ingress` and the like: knemu's own components run as pods (the
            # ingress controller) with the node's interpreter, which has knemu's dependencies.
            return ContainerPlan((sys.executable, *argv[1:]), builtin="knemu")
        return ContainerPlan(tuple(argv))
    repo = image_repository(container.image)
    base = repo.rsplit("/", 1)[-1]
    if "echo" in repo:
        ports = [int(env["NGINX_PORT"])] if env.get("NGINX_PORT", "").isdigit() else None
        return _builtin("echo", pod_name, ports or container_ports(container) or [80])
    if base.startswith("nginx"):
        return _builtin("nginx", pod_name, container_ports(container) or [80])
    if "tools" in repo or base.startswith(TOOLS_NAMES):
        return ContainerPlan(tuple(args) if args else ("sleep", "infinity"))
    return ContainerPlan(
        error=f"knemu cannot emulate image {container.image!r} (container {container.name!r}): "
        "give the container a command, or use nginx/echo/tools images"
    )


def _is_knemu_module(argv: list[str]) -> bool:
    exe = argv[0].rsplit("/", 1)[-1]
    return (
        exe in ("python", "python3")
        and len(argv) >= 3
        and argv[1] == "-m"
        and (argv[2] == "knemu" or argv[2].startswith("knemu."))
    )


def _builtin(mode: str, pod_name: str, ports: list[int]) -> ContainerPlan:
    # -S: no site-packages scan; the workloads need only the standard library (smaller, faster).
    argv = [
        sys.executable,
        "-S",
        "-m",
        "knemu.node_agent.runtime.workloads",
        mode,
        "--pod",
        pod_name,
    ]
    for port in sorted(set(ports)):
        argv += ["--port", str(port)]
    return ContainerPlan(tuple(argv), builtin=mode, ports=tuple(sorted(set(ports))))


def package_root() -> str:
    """The directory holding the ``knemu`` package, for the workloads' PYTHONPATH."""
    return str(Path(__file__).resolve().parents[3])  # <root>/knemu/node_agent/runtime/this


# ---- asyncio adapters ---------------------------------------------------------------------


class HttpHandler:
    def __init__(self, mode: str, pod: str) -> None:
        self.mode = mode
        self.pod = pod

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("", 0)
        local = writer.get_extra_info("sockname") or ("", 0)
        try:
            while await self._one(reader, writer, str(peer[0]), str(local[0])):
                pass
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _one(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str, local: str
    ) -> bool:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT_S)
        try:
            req = parse_head(head[:-4])
            await _discard_body(reader, req)
        except BadRequest as exc:
            writer.write(render_response(400, "text/plain", f"{exc}\n".encode(), False, False))
            await writer.drain()
            return False
        status, ctype, body = respond(self.mode, req, self.pod, peer, local)
        payload = body.encode()
        writer.write(render_response(status, ctype, payload, req.keep_alive, req.method == "HEAD"))
        await writer.drain()
        print(access_log_line(req, peer, status, len(payload)), flush=True)
        return req.keep_alive


async def _discard_body(reader: asyncio.StreamReader, req: Request) -> None:
    if "chunked" in req.headers.get("transfer-encoding", "").lower():
        while True:  # RFC 9112 section 7.1: chunk-size [ext] CRLF data CRLF ... 0 CRLF trailers
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadRequest(f"bad chunk size {size_line!r}") from None
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return
            await reader.readexactly(size + 2)
    length = req.headers.get("content-length", "0") or "0"
    if not length.isdigit() or int(length) > MAX_BODY_BYTES:
        raise BadRequest(f"bad Content-Length {length!r}")
    if int(length):
        await reader.readexactly(int(length))


class UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, pod: str) -> None:
        self.pod = pod
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector datagram transport does not subclass DatagramTransport, but is one.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(udp_reply(self.pod, str(addr[0])), addr)


async def serve(mode: str, pod: str, ports: list[int], host: str = "0.0.0.0") -> None:
    """Serve HTTP (TCP) and UDP echo on every port until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    handler = HttpHandler(mode, pod)
    servers = [await asyncio.start_server(handler, host, port) for port in ports]
    transports = [
        (await loop.create_datagram_endpoint(lambda: UdpEcho(pod), local_addr=(host, port)))[0]
        for port in ports
    ]
    await stop.wait()
    for server in servers:
        server.close()
    for transport in transports:
        transport.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m knemu.node_agent.runtime.workloads")
    parser.add_argument("mode", choices=["echo", "nginx"])
    parser.add_argument("--pod", required=True, help="pod name reported as From=")
    parser.add_argument("--port", type=int, action="append", help="TCP+UDP port (repeatable)")
    parser.add_argument("--host", default="0.0.0.0")
    args = parser.parse_args(argv)
    ports = sorted(set(args.port or [80]))
    try:
        asyncio.run(serve(args.mode, args.pod, ports, args.host))
    except OSError as exc:
        print(f"{args.mode}: cannot listen on ports {ports}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
