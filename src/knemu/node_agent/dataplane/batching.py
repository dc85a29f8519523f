"""A batch of underlay datagrams through the router with receive offload (GRO), sans-I/O.

The underlay adapter reads many datagrams per wakeup; this decapsulates each (counting drops
and answering ARP as ``Router.handle_underlay`` does), coalesces the inner TCP segments of each
peer's datagrams (``offload.coalesce``: in order, same flow, checksums verified) and routes each
resulting packet once.  Outputs come with the super-packet's ``gso_size`` (0 for an ordinary
packet) for the dispatcher to write whole to a pod or cut for the underlay and the host.
"""

from __future__ import annotations

from collections.abc import Sequence

from knemu.node_agent.dataplane.offload import coalesce
from knemu.node_agent.dataplane.router import Router
from knemu.node_agent.dataplane.routes import Output, Peer

Datagram = tuple[bytes, tuple[str, int]]  # (payload, source address)


def route_underlay_batch(
    router: Router, batch: Sequence[Datagram], now: float
) -> list[tuple[Output, int]]:
    """(output, gso_size) for everything ``batch`` makes the router send."""
    outputs: list[tuple[Output, int]] = []
    inner_by_peer: dict[str, tuple[Peer, list[bytes]]] = {}
    for datagram, source in batch:
        inner, peer, out = router.decapsulate(datagram, source, now)
        if inner is None or peer is None:
            if out is not None:
                outputs.append((out, 0))
            continue
        group = inner_by_peer.get(peer.name)
        if group is None:
            inner_by_peer[peer.name] = (peer, [inner])
        else:
            group[1].append(inner)
    for peer, packets in inner_by_peer.values():
        merged = [(packets[0], 0)] if len(packets) == 1 else coalesce(packets)
        for packet, gso_size in merged:
            out = router.handle_decapsulated(packet, peer, now, gso_size)
            if out is not None:
                outputs.append((out, gso_size))
    return outputs
