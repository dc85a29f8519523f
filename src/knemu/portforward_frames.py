"""Port-forward over a websocket: the framing, without I/O (used by api-server, agent and CLI).

It follows the kubelet's websocket port-forward (``pkg/kubelet/cri/streaming/portforward/
websocket.go``, subprotocol ``v4.channel.k8s.io``): the request names its ports
(``?port=80&port=443`` at the kubelet, ``?ports=80,443`` at the api-server as
PodPortForwardOptions has it); port number ``i`` (0-based, in request order) gets channel
``2*i`` for data, both ways, and ``2*i + 1`` for errors, server to client.  Every binary message
is its channel byte followed by the payload.  The server's first bytes on each of the two
channels are the port as an unsigned 16-bit little-endian integer; after that, the error
channel carries the reason a forward failed (kubelet: ``error forwarding port P to pod ...``).
One websocket carries one TCP connection per port, so a client opens a websocket per accepted
connection.  knemu adds one message: ``[255, 2*i]`` (v5.channel.k8s.io's CLOSE) half-closes
the pod connection of port ``i``, so a client's end of input reaches the pod as a TCP FIN.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from knemu.errors import LocalError

PORTFORWARD_PROTOCOLS = ("v4.channel.k8s.io",)
CLOSE = 255
MAX_MESSAGE = 1 << 20  # bytes of one websocket message; senders here use CHUNK
CHUNK = 65536  # bytes read from a socket per message


def parse_ports(values: Iterable[str]) -> list[int]:
    """Ports from query values, each one port or a comma-separated list (kubelet's rules)."""
    ports: list[int] = []
    for value in values:
        for part in value.split(","):
            if not part.strip().isdigit() or not 1 <= int(part) <= 65535:
                raise LocalError(
                    f"port-forward: {part!r} is not a port (1-65535); ask for ports=PORT[,PORT...]"
                )
            ports.append(int(part))
    if not ports:
        raise LocalError("port-forward needs at least one port: ports=PORT[,PORT...]")
    return ports


def data_channel(index: int) -> int:
    return 2 * index


def error_channel(index: int) -> int:
    return 2 * index + 1


def port_prefix(port: int) -> bytes:
    """The first bytes the server sends on both channels of ``port``."""
    return port.to_bytes(2, "little")


def frame(channel: int, payload: bytes) -> bytes:
    return bytes([channel]) + payload


def close_frame(index: int) -> bytes:
    """knemu's half-close of port ``index``'s data channel."""
    return bytes([CLOSE, data_channel(index)])


@dataclass(frozen=True)
class Received:
    """What one server message meant: data or error text for the port at ``index``."""

    index: int
    data: bytes = b""
    error: str = ""


@dataclass
class ClientDecoder:
    """The client's view of the server's messages for the ports it asked for, in order.

    It checks and strips each channel's 2-byte port prefix (which may arrive split across
    messages) and gives the rest as data or error text.
    """

    ports: list[int]
    _pending: dict[int, bytes] = field(default_factory=dict)  # channel -> prefix bytes so far

    def feed(self, message: bytes) -> Received | None:
        """Decode one binary message; None for an empty or prefix-only one."""
        if not message:
            return None
        channel, payload = message[0], message[1:]
        index = channel // 2
        if index >= len(self.ports):
            raise LocalError(
                f"port-forward: the server sent on channel {channel}, but only "
                f"{len(self.ports)} port(s) were asked for; it does not speak this protocol"
            )
        seen = self._pending.get(channel, b"")
        if len(seen) < 2:
            need = 2 - len(seen)
            seen, payload = seen + payload[:need], payload[need:]
            self._pending[channel] = seen
            if len(seen) == 2 and int.from_bytes(seen, "little") != self.ports[index]:
                raise LocalError(
                    f"port-forward: channel {channel} announced port "
                    f"{int.from_bytes(seen, 'little')}, expected {self.ports[index]}"
                )
        if not payload:
            return None
        if channel % 2:
            return Received(index, error=payload.decode("utf-8", "replace"))
        return Received(index, data=payload)


def parse_client_message(message: bytes, ports: int) -> tuple[str, int, bytes] | None:
    """The server's view of a client message: ("data" | "close", port index, payload).

    None for what a server ignores: empty messages, channels outside the ports asked for, and
    the error channels, which only the server writes.
    """
    if not message:
        return None
    channel = message[0]
    if channel == CLOSE and len(message) >= 2:
        channel, kind, payload = message[1], "close", b""
    else:
        kind, payload = "data", message[1:]
    if channel % 2 or channel // 2 >= ports:
        return None
    return kind, channel // 2, payload
