"""Proxies from the api-server to a node agent's HTTP API (the kubelet role).

As in Kubernetes, ``kubectl exec`` and ``kubectl logs`` talk to the api-server, which finds
the pod's node and forwards to that node's kubelet (https://kubernetes.io/docs/concepts/
architecture/control-plane-node-communication/#api-server-to-kubelet):

* ``/api/v1/namespaces/{ns}/pods/{name}/exec``: websocket, relayed frame by frame to the
  agent's ``/exec/{ns}/{pod}/{container}`` (channel protocol ``v4.channel.k8s.io``; the bytes
  are passed through untouched, so ``v5`` clients may close stdin with [255, 0]);
* ``/api/v1/namespaces/{ns}/pods/{name}/attach``: the same, to ``/attach/...``; a request for
  stdin to a container without ``stdin: true`` is refused here with the reason, since a
  refused websocket upgrade reaches most clients without its body;
* ``/api/v1/namespaces/{ns}/pods/{name}/portforward?ports=P[,P...]``: websocket, relayed to
  the agent's ``/portForward/{ns}/{pod}?port=P`` (framing in ``knemu.portforward_frames``);
* exec, attach and portforward also over SPDY/3.1 (``knemu.apiserver.streaming``), as kubectl
  sends them: the ``Upgrade: SPDY/3.1`` of every kubectl, and for port-forward the websocket
  subprotocol ``SPDY/3.1+portforward.k8s.io`` of kubectl >= 1.31; every SPDY stream pair or
  exec session becomes one agent websocket as above;
* ``/api/v1/namespaces/{ns}/pods/{name}/log``: streamed from ``/containerLogs/...``;
* ``/api/v1/nodes/{name}/proxy/{path}``: any method, to ``http://{InternalIP}:{port}/{path}``.

The node's address comes from its Node object: ``status.addresses`` (type InternalIP) and
``status.daemonEndpoints.kubeletEndpoint.Port``, which the node registry writes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
from aiohttp import web

from knemu.apiserver.rest.status import BadRequest, Obj, status_failure
from knemu.apiserver.storage.store import Store
from knemu.apiserver.streaming import bridges
from knemu.apiserver.streaming.spdy_connection import SpdyConnection
from knemu.apiserver.streaming.upgrade import (
    SPDY_TUNNEL,
    negotiate,
    serve_tunnel,
    serve_upgrade,
    wants_spdy,
)
from knemu.config import KUBELET_PORT
from knemu.errors import KnemuError, NotFound, Unavailable
from knemu.portforward_frames import MAX_MESSAGE, PORTFORWARD_PROTOCOLS, parse_ports
from knemu.tasks import until_first_done

log = logging.getLogger(__name__)

EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io")
AGENT_PROTOCOL = "v4.channel.k8s.io"
SPDY_EXEC_PROTOCOL = "v4.channel.k8s.io"  # over SPDY, the only version knemu speaks
SPDY_PORTFORWARD_PROTOCOL = "portforward.k8s.io"
_CONNECT_TIMEOUT_S = 5.0
# Request headers passed to the agent; hop-by-hop and host headers are not (RFC 9110 7.6.1).
_FORWARDED_HEADERS = ("Content-Type", "Accept")
# Boolean query flags passed on to the agent (PodExecOptions, PodAttachOptions; fromStart is
# knemu's, see node_agent.attach).
_FLAGS = {"exec": ("stdin", "tty"), "attach": ("stdin", "stdout", "stderr", "tty", "fromStart")}


_LOG_OPTIONS = ("follow", "tailLines", "limitBytes", "previous", "timestamps", "sinceSeconds",
                "sinceTime")  # fmt: skip


def kubelet_address(node: Obj) -> tuple[str, int]:
    """(InternalIP, kubelet port) of a Node object; Unavailable if it has no address."""
    name = node.get("metadata", {}).get("name", "?")
    status = node.get("status") or {}
    ips = [
        a.get("address")
        for a in status.get("addresses") or []
        if isinstance(a, dict) and a.get("type") == "InternalIP" and a.get("address")
    ]
    if not ips:
        raise Unavailable(
            f'node "{name}" has no InternalIP in status.addresses: its agent has not '
            "registered yet; start it or wait for `knemu get nodes` to list it Ready"
        )
    endpoint = (status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}
    port = endpoint.get("Port") or KUBELET_PORT
    return str(ips[0]), int(port)


def _truthy(value: str | None) -> bool:
    return value in ("1", "true", "True")


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


class NodeProxy:
    """Resolves pods and nodes to agents and relays requests to them."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._session: aiohttp.ClientSession | None = None

    def add_routes(self, app: web.Application) -> None:
        """Register before the REST catch-all routes so these paths win."""
        pods = "/api/v1/namespaces/{ns}/pods/{name}"
        app.router.add_get(pods + "/exec", self._exec)
        app.router.add_post(pods + "/exec", self._exec)
        app.router.add_get(pods + "/attach", self._attach)
        app.router.add_post(pods + "/attach", self._attach)
        app.router.add_get(pods + "/log", self._log)
        app.router.add_get(pods + "/portforward", self._portforward)
        app.router.add_post(pods + "/portforward", self._portforward)
        app.router.add_route("*", "/api/v1/nodes/{name}/proxy", self._node)
        app.router.add_route("*", "/api/v1/nodes/{name}/proxy/{path:.*}", self._node)
        app.on_cleanup.append(self._close)

    async def _close(self, app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=_CONNECT_TIMEOUT_S)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    # ---- resolution ------------------------------------------------------------------------

    def _node_base(self, node_name: str) -> str:
        node = self.store.get("Node", "", node_name)
        if node is None:
            raise NotFound(f'node "{node_name}" not found: see `knemu get nodes`')
        ip, port = kubelet_address(node)
        return f"http://{_host(ip)}:{port}"

    def _pod(self, request: web.Request) -> tuple[Obj, str]:
        """The pod of a request and its node's name; refused if it is not on a node."""
        ns, name = request.match_info["ns"], request.match_info["name"]
        pod = self.store.get("Pod", ns, name)
        if pod is None:
            raise NotFound(f'pods "{name}" not found in namespace {ns!r}')
        node = (pod.get("spec") or {}).get("nodeName")
        if not node:
            raise BadRequest(
                f'pod "{name}" is not scheduled to a node yet; wait until it is Running'
            )
        return pod, str(node)

    def _pod_target(self, request: web.Request) -> tuple[str, str, str]:
        """(agent base URL, node name, container) for a pod request."""
        name = request.match_info["name"]
        pod, node = self._pod(request)
        spec = pod.get("spec") or {}
        names = [c.get("name") for c in spec.get("containers") or [] if isinstance(c, dict)]
        container = request.query.get("container") or (names[0] if names else "")
        if container not in names:
            raise BadRequest(
                f'container "{container}" is not valid for pod "{name}": choose one of '
                f"{', '.join(str(n) for n in names) or '(none)'}"
            )
        return self._node_base(node), node, str(container)

    @staticmethod
    def _unreachable(node: str, base: str, exc: BaseException) -> Unavailable:
        return Unavailable(
            f'node "{node}" agent at {base} is unreachable ({exc or type(exc).__name__}): '
            "check the node is running (`knemu get nodes`)"
        )

    # ---- handlers --------------------------------------------------------------------------

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        return await self._channels(request, "exec")

    async def _attach(self, request: web.Request) -> web.StreamResponse:
        return await self._channels(request, "attach")

    async def _channels(self, request: web.Request, kind: str) -> web.StreamResponse:
        """exec or attach: upgrade the client, open the agent's websocket, relay both ways."""
        client = web.WebSocketResponse(protocols=EXEC_PROTOCOLS, max_msg_size=0)
        try:
            base, node, container = self._pod_target(request)
            if kind == "attach" and _truthy(request.query.get("stdin")):
                self._check_stdin(request, container)
            if wants_spdy(request):
                return await self._channels_spdy(request, kind, base, node, container)
            if not client.can_prepare(request).ok:
                raise BadRequest(
                    f"{kind} needs a websocket upgrade (subprotocol v4.channel.k8s.io or "
                    f"v5.channel.k8s.io); use `knemu {kind}` or a Kubernetes client"
                )
            upstream = await self._connect(request, kind, base, node, container)
        except KnemuError as err:
            return _error(err, "pods", request.match_info["name"])
        try:
            await client.prepare(request)
            await _relay(client, upstream)
        finally:
            await upstream.close()
        return client

    async def _portforward(self, request: web.Request) -> web.StreamResponse:
        """Port-forward over a websocket (v4.channel.k8s.io, or SPDY/3.1 tunnelled in it) or
        the SPDY/3.1 upgrade; each pod connection is one agent websocket."""
        name = request.match_info["name"]
        protocols = (SPDY_TUNNEL, *PORTFORWARD_PROTOCOLS)
        client = web.WebSocketResponse(protocols=protocols, max_msg_size=MAX_MESSAGE)
        try:
            _, node = self._pod(request)
            base = self._node_base(node)
            if wants_spdy(request):
                negotiate(request, SPDY_PORTFORWARD_PROTOCOL)
                return await serve_upgrade(
                    request, SPDY_PORTFORWARD_PROTOCOL, self._spdy_portforward(request, base, node)
                )
            if not client.can_prepare(request).ok:
                raise BadRequest(
                    "portforward needs a websocket upgrade (subprotocol v4.channel.k8s.io or "
                    f"{SPDY_TUNNEL}) or Upgrade: SPDY/3.1; use `knemu port-forward` or kubectl"
                )
            if client.can_prepare(request).protocol == SPDY_TUNNEL:
                await client.prepare(request)
                await serve_tunnel(client, self._spdy_portforward(request, base, node))
                return client
            ports = parse_ports(
                request.query.getall("ports", []) + request.query.getall("port", [])
            )
            upstream = await self._open_portforward(request, base, node, ports)
        except KnemuError as err:
            return _error(err, "pods", name)
        try:
            await client.prepare(request)
            await _relay(client, upstream)
        finally:
            await upstream.close()
        return client

    async def _open_portforward(
        self, request: web.Request, base: str, node: str, ports: list[int]
    ) -> aiohttp.ClientWebSocketResponse:
        ns, name = request.match_info["ns"], request.match_info["name"]
        url = f"{base}/portForward/{ns}/{name}"
        params = [("port", str(p)) for p in ports]
        try:
            return await self._client().ws_connect(
                url, params=params, protocols=(AGENT_PROTOCOL,), max_msg_size=MAX_MESSAGE
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise _refused("portforward", node, f"{ns}/{name}", "", exc.status) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self._unreachable(node, base, exc) from None

    def _spdy_portforward(
        self, request: web.Request, base: str, node: str
    ) -> Callable[[SpdyConnection], Coroutine[Any, Any, None]]:
        pod = f"{request.match_info['ns']}/{request.match_info['name']}"

        async def open_port(port: int) -> aiohttp.ClientWebSocketResponse:
            return await self._open_portforward(request, base, node, [port])

        return lambda connection: bridges.serve_portforward(connection, open_port, pod)

    async def _channels_spdy(
        self, request: web.Request, kind: str, base: str, node: str, container: str
    ) -> web.StreamResponse:
        """exec or attach over the SPDY/3.1 upgrade (kubectl <= 1.29, or with
        KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false)."""
        negotiate(request, SPDY_EXEC_PROTOCOL)
        options = {flag: _truthy(request.query.get(flag))
                   for flag in ("stdin", "stdout", "stderr", "tty")}  # fmt: skip

        async def open_channels() -> aiohttp.ClientWebSocketResponse:
            return await self._connect(request, kind, base, node, container)

        wanted = bridges.expected_streams(options)
        return await serve_upgrade(
            request,
            SPDY_EXEC_PROTOCOL,
            lambda connection: bridges.serve_channels(connection, open_channels, wanted),
        )

    def _check_stdin(self, request: web.Request, container: str) -> None:
        """attach -i needs the container to hold its stdin open (core/v1 Container.stdin)."""
        ns, name = request.match_info["ns"], request.match_info["name"]
        pod = self.store.get("Pod", ns, name) or {}
        specs = (pod.get("spec") or {}).get("containers") or []
        spec = next((c for c in specs if isinstance(c, dict) and c.get("name") == container), {})
        if spec.get("stdin") is not True:
            raise BadRequest(
                f'cannot attach stdin to container "{container}" of pod "{name}": it was not '
                "created with stdin: true, so its stdin is /dev/null; attach without -i to "
                "watch its output, or create the pod with stdin: true"
            )

    async def _connect(
        self, request: web.Request, kind: str, base: str, node: str, container: str
    ) -> aiohttp.ClientWebSocketResponse:
        """Open the agent's exec or attach websocket with the request's options."""
        ns, name = request.match_info["ns"], request.match_info["name"]
        params = [("command", c) for c in request.query.getall("command", [])]
        for flag in _FLAGS[kind]:
            if _truthy(request.query.get(flag)):
                params.append((flag, "1"))
        url = f"{base}/{kind}/{ns}/{name}/{container}"
        try:
            return await self._client().ws_connect(
                url, params=params, protocols=(AGENT_PROTOCOL,), max_msg_size=0
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise _refused(kind, node, f"{ns}/{name}", container, exc.status) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self._unreachable(node, base, exc) from None

    async def _log(self, request: web.Request) -> web.StreamResponse:
        try:
            base, node, container = self._pod_target(request)
            ns, name = request.match_info["ns"], request.match_info["name"]
            # PodLogOptions go to the kubelet as they came; it answers bad ones (400)
            params = {k: v for k, v in request.query.items() if k in _LOG_OPTIONS}
            url = f"{base}/containerLogs/{ns}/{name}/{container}"
            return await self._forward(request, node, base, "GET", url, params, b"")
        except KnemuError as err:
            return _error(err, "pods", request.match_info["name"])

    async def _node(self, request: web.Request) -> web.StreamResponse:
        node = request.match_info["name"]
        try:
            base = self._node_base(node)
            url = f"{base}/{request.match_info.get('path', '')}"
            body = await request.read()
            params = list(request.query.items())
            return await self._forward(request, node, base, request.method, url, params, body)
        except KnemuError as err:
            return _error(err, "nodes", node)

    async def _forward(
        self,
        request: web.Request,
        node: str,
        base: str,
        method: str,
        url: str,
        params: Any,
        body: bytes,
    ) -> web.StreamResponse:
        """Send one request to an agent and stream its response back unchanged."""
        headers = {h: request.headers[h] for h in _FORWARDED_HEADERS if h in request.headers}
        try:
            upstream = await self._client().request(
                method, url, params=params, data=body or None, headers=headers
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self._unreachable(node, base, exc) from None
        async with upstream:
            resp = web.StreamResponse(status=upstream.status)
            if "Content-Type" in upstream.headers:
                resp.headers["Content-Type"] = upstream.headers["Content-Type"]
            await resp.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await resp.write(chunk)
            except (aiohttp.ClientError, ConnectionResetError) as exc:
                log.info("proxy to node %s ended early: %s", node, exc)
                return resp
            await resp.write_eof()
            return resp


async def _pipe(src: Any, dst: Any) -> None:
    """Copy websocket messages from ``src`` to ``dst`` until ``src`` closes."""
    async for msg in src:
        if msg.type == aiohttp.WSMsgType.BINARY:
            await dst.send_bytes(msg.data)
        elif msg.type == aiohttp.WSMsgType.TEXT:
            await dst.send_str(msg.data)
        else:
            break


async def _relay(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    """Relay both ways; when either side finishes, close the other."""
    await until_first_done(
        ("stream-agent-to-client", _pipe(upstream, client)),
        ("stream-client-to-agent", _pipe(client, upstream)),
    )
    await client.close()
    await upstream.close()


class _AgentRefused(KnemuError):
    reason = "BadRequest"


def _refused(kind: str, node: str, pod: str, container: str, status: int) -> KnemuError:
    """The agent answered the exec/attach upgrade with an HTTP error instead of a websocket."""
    what = "exec in" if kind == "exec" else f"{kind} to"
    target = f'container "{container}" of pod {pod}' if container else f"pod {pod}"
    err = _AgentRefused(
        f'node "{node}" refused {what} {target} (HTTP {status}): the '
        f"{'container' if container else 'pod'} may not be running (yet, or any more); see "
        "`knemu describe pod` and `knemu logs`"
    )
    err.http_status = status if 400 <= status <= 599 else 502
    err.reason = "NotFound" if status == 404 else "BadRequest" if status < 500 else "InternalError"
    return err


def _error(err: KnemuError, kind: str, name: str) -> web.Response:
    return web.json_response(status_failure(err, kind, name), status=err.http_status)
