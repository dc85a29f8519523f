"""``GET /capture``: a pcap/pcapng stream of the node's underlay or of one pod's eth0.

Query parameters (all optional): ``pod=NAMESPACE/NAME`` (default: the node's underlay socket,
VXLAN datagrams with their outer IPv4/UDP headers rebuilt), ``format=pcap|pcapng`` (default
pcapng), ``filter=...`` (``knemu.node_agent.dataplane.capture``), ``count=N`` (stop after N
packets), ``duration=S`` (stop after S seconds; at most MAX_DURATION_S, which is also the
default), ``snaplen=BYTES``.

The capture sets the adapter's ``tap`` while it runs and removes it when it ends (count,
duration, or the client going away), so a node nobody captures pays nothing.  Records are
queued in the session (bounded); this handler drains them to the client.  A client slower
than the traffic loses packets (pcapng's closing statistics block says how many), never the
data path.  At most MAX_CAPTURES captures run on a node at once; more get 429.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Protocol

from aiohttp import web

from knemu.errors import KnemuError, LocalError, NotFound, TooManyRequests
from knemu.node_agent.dataplane.adapters import DatagramTap, PacketTap
from knemu.node_agent.dataplane.capture import CaptureSession, raw_ipv4, raw_ipv4_udp
from knemu.node_agent.kubelet.responses import error_response

MAX_CAPTURES = 8
MAX_DURATION_S = 3600.0
CHECK_CLIENT_S = 1.0  # how often an idle capture checks that its client is still there

Detach = Callable[[], None]


class TappedUnderlay(Protocol):
    """The underlay socket's adapter (``dataplane.adapters.UnderlayEndpoint``): ``ip_protocol``
    is None until it is open, 0 for UDP (VXLAN), else a raw socket's protocol (IP-in-IP: 4)."""

    tap: DatagramTap | None
    ip_protocol: int | None


class TappedPort(Protocol):
    """A pod's eth0 adapter (``dataplane.adapters.TunPort``)."""

    tap: PacketTap | None


class CaptureTaps:
    """The captures running on one node, and the taps they install on its adapters:
    ``underlay`` returns the underlay adapter once it is open (None before), ``pod_ports``
    are the running pods' eth0 adapters by ``namespace/name``."""

    def __init__(
        self,
        underlay: Callable[[], TappedUnderlay | None],
        pod_ports: Mapping[str, TappedPort],
    ) -> None:
        self._underlay = underlay
        self._pod_ports = pod_ports
        self._sessions: dict[int, list[CaptureSession]] = {}  # id(adapter) -> sessions
        self._ident = 0

    @property
    def running(self) -> int:
        return sum(len(s) for s in self._sessions.values())

    def attach_underlay(self, session: CaptureSession) -> Detach:
        underlay = self._underlay()
        if underlay is None or underlay.ip_protocol is None:
            raise NotFound(
                "the node's underlay socket is not open yet (try again), or the node's "
                "network backend is bgp, whose pod packets the node's kernel forwards (capture "
                "them with tcpdump on the node's interface)"
            )
        sessions = self._add(underlay, session)
        protocol = underlay.ip_protocol

        def tap(
            data: bytes | bytearray,
            src: tuple[str, int],
            dst: tuple[str, int],
            now: float,
            outbound: bool,
        ) -> None:
            self._ident += 1
            packet = None
            for s in sessions:
                if not s.room_for(len(data) + 28):  # the outer IPv4 and UDP headers
                    s.count_drop()  # the reader is behind: skip building the packet
                    continue
                if packet is None:
                    packet = _on_the_wire(data, src, dst, protocol, outbound, self._ident)
                s.offer(packet, now, outbound)

        underlay.tap = tap
        return lambda: self._remove(underlay, session)

    def attach_pod(self, key: str, session: CaptureSession) -> Detach:
        port = self._pod_ports.get(key)
        if port is None:
            raise NotFound(
                f"pod {key} has no eth0 on this node: it does not run here or "
                "it uses the node's network (hostNetwork): capture its node"
            )
        sessions = self._add(port, session)

        def tap(packet: bytes | bytearray, now: float, outbound: bool) -> None:
            for s in sessions:
                s.offer(packet, now, outbound)

        port.tap = tap
        return lambda: self._remove(port, session)

    def _add(
        self, adapter: TappedUnderlay | TappedPort, session: CaptureSession
    ) -> list[CaptureSession]:
        sessions = self._sessions.setdefault(id(adapter), [])
        sessions.append(session)
        return sessions

    def _remove(self, adapter: TappedUnderlay | TappedPort, session: CaptureSession) -> None:
        sessions = self._sessions.get(id(adapter), [])
        with contextlib.suppress(ValueError):
            sessions.remove(session)
        if not sessions:
            self._sessions.pop(id(adapter), None)
            adapter.tap = None  # idle again: the adapter's hot path skips the tap


def _on_the_wire(
    data: bytes | bytearray,
    src: tuple[str, int],
    dst: tuple[str, int],
    protocol: int,
    outbound: bool,
    ident: int,
) -> bytes:
    """The underlay packet as on the wire: UDP payloads get their IPv4/UDP headers rebuilt; a
    raw socket reads whole IPv4 packets, and what it sends the kernel wraps in IPv4."""
    if not protocol:
        return raw_ipv4_udp(data, src, dst, ident)
    if not outbound:
        return bytes(data)
    return raw_ipv4(data, src[0], dst[0], protocol, ident)


def _int(query: Mapping[str, str], name: str) -> int | None:
    if name not in query:
        return None
    try:
        return int(query[name])
    except ValueError:
        raise LocalError(f"capture: {name} must be a whole number, not {query[name]!r}") from None


def session_from_query(
    query: Mapping[str, str], node: str, wall_offset: float, on_data: Callable[[], None]
) -> tuple[CaptureSession, float]:
    """The session a request asks for and its duration in seconds."""
    try:
        duration = float(query.get("duration", MAX_DURATION_S))
    except ValueError:
        raise LocalError("capture: duration must be seconds") from None
    if not 0 < duration <= MAX_DURATION_S:
        raise LocalError(f"capture: duration must be between 0 and {MAX_DURATION_S:.0f} s")
    pod = query.get("pod", "")
    session = CaptureSession(
        query.get("format", "pcapng"),
        interface=f"{pod}/eth0" if pod else f"{node}/underlay",
        packet_filter=query.get("filter", ""),
        count=_int(query, "count"),
        snaplen=_int(query, "snaplen") or 65535,
        wall_offset=wall_offset,
        on_data=on_data,
    )
    return session, duration


async def serve_capture(
    request: web.Request, taps: CaptureTaps, node: str, wall_offset: float
) -> web.StreamResponse:
    wake = asyncio.Event()
    try:
        if taps.running >= MAX_CAPTURES:
            raise TooManyRequests(f"node {node} already runs {MAX_CAPTURES} captures; retry "
                                  "when one has ended")  # fmt: skip
        session, duration = session_from_query(request.query, node, wall_offset, wake.set)
        pod = request.query.get("pod", "")
        detach = taps.attach_pod(pod, session) if pod else taps.attach_underlay(session)
    except KnemuError as exc:
        return error_response(exc)
    ctype = "application/vnd.tcpdump.pcap" if session.fmt == "pcap" else "application/x-pcapng"
    resp = web.StreamResponse(headers={"Content-Type": ctype})
    loop = asyncio.get_running_loop()
    try:
        await resp.prepare(request)
        await resp.write(session.header())
        deadline = loop.time() + duration
        while not session.done and (left := deadline - loop.time()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), min(left, CHECK_CLIENT_S))
            wake.clear()
            if request.transport is None or request.transport.is_closing():
                return resp  # the client went away
            if data := session.take():
                await resp.write(data)
        detach()
        await resp.write(session.take() + session.trailer(loop.time()))
        await resp.write_eof()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        detach()
    return resp
