"""Underlay impairments: seeded loss, partition, stacking, delay/jitter, rate, validation."""

from __future__ import annotations

import pytest

from knemu.errors import Invalid
from knemu.node_agent.dataplane.faults import Impairments, ImpairmentSpec, partition_rules

DATA = bytes(range(100))


def test_nothing_installed_passes_through() -> None:
    imp = Impairments(seed=1)
    assert not imp
    assert imp.apply(DATA, "node-2", "egress", 5.0) == [(5.0, DATA)]


def test_loss_rate_is_close_and_seeded() -> None:
    def run(seed: int) -> int:
        imp = Impairments(seed=seed)
        imp.add({"peer": "node-2", "loss_pct": 30.0})
        return sum(bool(imp.apply(DATA, "node-2", "egress", 0.0)) for _ in range(5000))

    passed = run(42)
    assert passed == run(42)
    assert 3350 <= passed <= 3650  # 70 % of 5000 = 3500, 4.5 sigma ~ 146


def test_partition_is_per_peer_and_per_direction() -> None:
    imp = Impairments()
    imp.add(ImpairmentSpec(peer="node-3", direction="ingress", partition=True))
    assert imp.apply(DATA, "node-3", "ingress", 0.0) == []
    assert imp.apply(DATA, "node-3", "egress", 0.0) == [(0.0, DATA)]
    assert imp.apply(DATA, "node-2", "ingress", 0.0) == [(0.0, DATA)]
    assert imp.clear("node-3") == 1 and not imp


def test_delay_jitter_and_stacking() -> None:
    imp = Impairments(seed=3)
    imp.add({"delay_ms": 100.0, "jitter_ms": 20.0})
    imp.add({"peer": "node-2", "delay_ms": 50.0})
    times = [imp.apply(DATA, "node-2", "egress", 10.0)[0][0] for _ in range(200)]
    assert all(10.13 - 1e-9 <= t <= 10.17 + 1e-9 for t in times)
    assert max(times) - min(times) > 0.02  # jitter really varies
    other = imp.apply(DATA, "node-4", "egress", 10.0)[0][0]
    assert 10.08 - 1e-9 <= other <= 10.12 + 1e-9  # only the first spec matches node-4


def test_duplicate_and_corrupt() -> None:
    imp = Impairments(seed=5)
    imp.add({"duplicate_pct": 100.0, "corrupt_pct": 100.0})
    out = imp.apply(DATA, "node-2", "egress", 0.0)
    assert len(out) == 2
    for _, payload in out:
        diff = [i for i in range(len(DATA)) if payload[i] != DATA[i]]
        assert len(diff) == 1 and payload[diff[0]] == DATA[diff[0]] ^ 0xFF
    stats = imp.statistics()
    assert (stats["duplicated"], stats["corrupted"]) == (1, 2)


def test_rate_limit_serialises_and_tail_drops() -> None:
    imp = Impairments()
    # 1000 bytes at 80 kbit/s = 0.1 s each; the queue holds 0.25 s of waiting.
    imp.add({"rate_kbit": 80.0, "rate_queue_ms": 250.0})
    payload = bytes(1000)
    times = [imp.apply(payload, "node-2", "egress", 0.0) for _ in range(5)]
    sent = [t[0][0] for t in times if t]
    # waits 0, 0.1, 0.2 s; the 4th and 5th would wait 0.3 s > 0.25 s: tail-dropped
    assert sent == pytest.approx([0.1, 0.2, 0.3])
    assert times[3] == [] == times[4]
    # the other direction has its own link
    assert imp.apply(payload, "node-2", "ingress", 0.0)[0][0] == pytest.approx(0.1)


def test_validation_names_the_field() -> None:
    with pytest.raises(Invalid) as err:
        Impairments().add({"loss_pct": 120.0, "direction": "sideways"})
    fields = {c.field for c in err.value.causes}
    assert fields == {"loss_pct", "direction"}
    with pytest.raises(Invalid, match="lossy"):
        ImpairmentSpec.from_dict({"lossy": 1})
    with pytest.raises(Invalid, match="delay_ms: must be a float"):
        ImpairmentSpec.from_dict({"delay_ms": "10"})
    with pytest.raises(Invalid, match="partition: must be a bool"):
        ImpairmentSpec.from_dict({"partition": 1})
    with pytest.raises(Invalid, match="JSON object"):
        ImpairmentSpec.from_dict([1])


def test_describe_round_trips_through_json_dicts() -> None:
    imp = Impairments()
    ident = imp.add({"peer": "node-2", "loss_pct": 5, "delay_ms": 10})
    described = imp.describe()
    assert described[0]["id"] == ident and described[0]["loss_pct"] == 5.0
    spec = {k: v for k, v in described[0].items() if k != "id"}
    assert ImpairmentSpec.from_dict(spec) == ImpairmentSpec(
        peer="node-2", loss_pct=5.0, delay_ms=10.0
    )
    assert imp.clear() == 1 and imp.describe() == []


def test_partitions_become_kernel_rules_for_bgp() -> None:
    """Backend bgp: a partition drops the peer's underlay address (BGP session) and podCIDR
    (native pod packets) in the kernel; the script replaces the whole table."""
    changes: list[int] = []
    faults = Impairments()
    faults.on_change = lambda: changes.append(1)
    faults.add({"partition": True, "peer": "node-2", "direction": "ingress"})
    faults.add({"loss_pct": 50.0})
    assert faults.partitions() == [("node-2", "ingress")] and len(changes) == 2
    peers = {
        "node-2": ("192.168.59.12", "10.244.2.0/24"),
        "node-3": ("192.168.59.13", "10.244.3.0/24"),
    }
    script = partition_rules(faults.partitions(), peers)
    assert script.startswith("table ip knemu_chaos\ndelete table ip knemu_chaos\n")
    assert "ip saddr { 10.244.2.0/24, 192.168.59.12 } counter drop" in script
    assert "daddr" not in script and "192.168.59.13" not in script
    everyone = partition_rules([("", "both")], peers)
    assert everyone.count("10.244.3.0/24") == 4  # input, output, forward (saddr and daddr)
    faults.clear()
    assert faults.partitions() == [] and len(changes) == 3
    assert "drop" not in partition_rules([], peers)
