"""Routers joined by an in-memory underlay that applies the fault injector, as the adapter does."""

from __future__ import annotations

from knemu.node_agent.dataplane.faults import Impairments
from knemu.node_agent.dataplane.router import OUT_POD, OUT_UNDERLAY
from knemu.proto import wire

from .._cluster import POD_A, POD_B, UNDERLAY1, Pair, pair

PINGS = 1000


def _ping(seq: int) -> bytes:
    echo = wire.IcmpMessage(8, 0, b"\x00\x07" + seq.to_bytes(2, "big"), b"chaos")
    return wire.ip_packet(POD_A, POD_B, wire.PROTO_ICMP, wire.encode_icmp(echo))


def _send_all(p: Pair, faults: Impairments) -> list[tuple[float, bytes]]:
    """Every ping from pod A through node-1's egress faults: what reaches node-2, when."""
    arrivals = []
    for seq in range(PINGS):
        out = p.r1.handle_pod("a", _ping(seq), float(seq))
        assert out is not None and out[0] == OUT_UNDERLAY
        arrivals += faults.apply(bytes(out[2]), "node-2", "egress", float(seq))
    return arrivals


def test_loss_and_duplicates_reach_the_peer_in_proportion() -> None:
    p = pair()
    faults = Impairments(seed=11)
    faults.add({"peer": "node-2", "direction": "egress", "loss_pct": 20.0})
    faults.add({"peer": "node-2", "duplicate_pct": 10.0, "delay_ms": 5.0})
    arrivals = _send_all(p, faults)
    delivered = [p.r2.handle_underlay(d, (UNDERLAY1, 1), t) for t, d in sorted(arrivals)]
    assert all(o is not None and o[:2] == (OUT_POD, "b") for o in delivered)
    assert 760 <= len(delivered) <= 1000  # ~800 kept, ~80 of them doubled
    assert p.r2.statistics()["delivered"] == len(delivered)
    assert all(t >= 0.005 for t, _ in arrivals)


def test_corrupted_datagrams_are_counted_drops_or_bad_inner_checksums() -> None:
    p = pair()
    faults = Impairments(seed=5)
    faults.add({"corrupt_pct": 100.0})
    arrivals = _send_all(p, faults)
    outcomes = [p.r2.handle_underlay(d, (UNDERLAY1, 1), t) for t, d in arrivals]
    stats = p.r2.statistics()
    drops = sum(v for k, v in stats.items() if k.startswith("drop_"))
    delivered = [o for o in outcomes if o is not None and o[0] == OUT_POD]
    assert drops + len(delivered) + stats["refused"] == PINGS
    assert drops > 0 and stats["drop_bad_checksum"] > 0
    # A flip the router cannot see (VXLAN reserved bits, source MAC) changes nothing it
    # delivers; one in the ICMP message is caught by the pod's own kernel (its checksum).
    for out in delivered:
        ip = wire.decode_ipv4(bytes(out[2]))
        if wire.checksum(ip.payload) == 0:
            seq = int.from_bytes(ip.payload[6:8], "big")
            assert ip.payload == wire.decode_ipv4(_ping(seq)).payload
