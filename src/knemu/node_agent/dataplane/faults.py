"""Chaos on the underlay, sans-I/O: per-peer stackable impairments with a seeded RNG.

The underlay adapter calls ``Impairments.apply(datagram, peer, direction, now)`` for every VXLAN
datagram it is about to send (``egress``) or has just received (``ingress``) and sends/delivers
what comes back at the given times; an empty list means dropped.  The impairments are those of
Linux netem (``tc qdisc ... netem loss/delay/duplicate/corrupt/rate``, see tc-netem(8)) plus a
partition, so chaos needs no kernel ``tc`` and runs the same everywhere.  Specs matching a
datagram are applied in the order they were added, each to the output of the previous one
(stacking, like chained qdiscs).

``rate_kbit`` is a token bucket with no burst that serialises datagrams (netem ``rate``): a
datagram waits until the link is free, and is dropped when it would wait longer than
``rate_queue_ms`` (the queue limit).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from knemu.errors import FieldError, Invalid

DIRECTIONS = ("egress", "ingress", "both")


@dataclass(frozen=True)
class ImpairmentSpec:
    """One impairment; ``peer`` "" applies to every peer.  Percentages are 0-100."""

    peer: str = ""
    direction: str = "both"  # egress (to the peer), ingress (from the peer) or both
    partition: bool = False  # drop everything
    loss_pct: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0  # uniform in [-jitter, +jitter] around delay_ms, never below 0
    duplicate_pct: float = 0.0
    corrupt_pct: float = 0.0  # flip one byte (XOR 0xFF) at a random offset
    rate_kbit: float = 0.0  # 0: unlimited
    rate_queue_ms: float = 1000.0  # longest wait behind the rate limit before a drop

    def validate(self) -> None:
        """Raise errors.Invalid naming every bad field."""
        causes: list[FieldError] = []
        if self.direction not in DIRECTIONS:
            causes.append(FieldError("direction", f"must be one of {', '.join(DIRECTIONS)}"))
        for name in ("loss_pct", "duplicate_pct", "corrupt_pct"):
            if not 0.0 <= getattr(self, name) <= 100.0:
                causes.append(FieldError(name, "must be between 0 and 100"))
        for name in ("delay_ms", "jitter_ms", "rate_kbit", "rate_queue_ms"):
            if not 0.0 <= getattr(self, name) <= 3_600_000.0:
                causes.append(FieldError(name, "must be between 0 and 3600000"))
        if causes:
            raise Invalid("Impairment", self.peer or "*", causes)

    @classmethod
    def from_dict(cls, data: Any) -> ImpairmentSpec:
        """Build from a JSON object (``POST /chaos``): unknown keys and wrong types are
        errors.Invalid naming the field."""
        if not isinstance(data, dict):
            raise Invalid("Impairment", "*", [FieldError("<body>", "must be a JSON object")])
        known = {f.name: f for f in fields(cls)}
        causes = [
            FieldError(k, f"unknown field; known: {', '.join(known)}", "FieldValueNotSupported")
            for k in data
            if k not in known
        ]
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                continue
            expected = type(getattr(cls(), key))
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, expected) or (
                expected is not bool and isinstance(value, bool)
            ):
                causes.append(FieldError(key, f"must be a {expected.__name__}"))
                continue
            values[key] = value
        if causes:
            raise Invalid("Impairment", str(data.get("peer", "*")), causes)
        spec = cls(**values)
        spec.validate()
        return spec

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Active:
    """An installed spec and its token-bucket state per direction."""

    __slots__ = ("busy_until", "id", "spec")

    def __init__(self, ident: int, spec: ImpairmentSpec) -> None:
        self.id = ident
        self.spec = spec
        self.busy_until = {"egress": 0.0, "ingress": 0.0}

    def matches(self, peer: str, direction: str) -> bool:
        s = self.spec
        return (not s.peer or s.peer == peer) and s.direction in ("both", direction)


class Impairments:
    """The installed impairments of one node's underlay."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)
        self._active: list[_Active] = []
        self._next_id = 1
        self._stats = {"passed": 0, "dropped": 0, "duplicated": 0, "corrupted": 0, "delayed": 0}
        # Called after every add/clear: with backend bgp the kernel carries the traffic, so
        # the agent mirrors partitions into kernel rules (``partition_rules``).
        self.on_change: Callable[[], None] | None = None

    def __bool__(self) -> bool:
        return bool(self._active)

    def add(self, spec: ImpairmentSpec | dict[str, Any]) -> int:
        """Install one impairment (a spec or its JSON dict); returns its id."""
        if isinstance(spec, dict):
            spec = ImpairmentSpec.from_dict(spec)
        else:
            spec.validate()
        ident = self._next_id
        self._next_id += 1
        self._active.append(_Active(ident, spec))
        if self.on_change is not None:
            self.on_change()
        return ident

    def clear(self, peer: str | None = None) -> int:
        """Remove every impairment (peer None) or those naming ``peer``; returns how many."""
        before = len(self._active)
        self._active = [a for a in self._active if peer is not None and a.spec.peer != peer]
        if self.on_change is not None:
            self.on_change()
        return before - len(self._active)

    def partitions(self) -> list[tuple[str, str]]:
        """(peer, direction) of every installed partition; peer "" is every peer."""
        return [(a.spec.peer, a.spec.direction) for a in self._active if a.spec.partition]

    def describe(self) -> list[dict[str, Any]]:
        return [{"id": a.id, **a.spec.to_dict()} for a in self._active]

    def statistics(self) -> dict[str, int]:
        return dict(self._stats)

    def apply(
        self, datagram: bytes, peer: str, direction: str, now: float
    ) -> list[tuple[float, bytes]]:
        """(send time, payload) pairs for one datagram to/from ``peer``; [] = dropped."""
        out = [(now, datagram)]
        for active in self._active:
            if active.matches(peer, direction):
                out = [r for t, data in out for r in self._one(active, direction, t, data)]
                if not out:
                    break
        self._stats["passed" if out else "dropped"] += 1
        return out

    def _one(
        self, active: _Active, direction: str, t: float, data: bytes
    ) -> list[tuple[float, bytes]]:
        s, rng = active.spec, self._rng
        if s.partition or (s.loss_pct and rng.random() * 100.0 < s.loss_pct):
            return []
        copies = [data]
        if s.duplicate_pct and rng.random() * 100.0 < s.duplicate_pct:
            copies.append(data)
            self._stats["duplicated"] += 1
        out: list[tuple[float, bytes]] = []
        for copy in copies:
            if s.corrupt_pct and copy and rng.random() * 100.0 < s.corrupt_pct:
                i = rng.randrange(len(copy))
                copy = copy[:i] + bytes((copy[i] ^ 0xFF,)) + copy[i + 1 :]
                self._stats["corrupted"] += 1
            when = t
            if s.delay_ms or s.jitter_ms:
                jitter = rng.uniform(-s.jitter_ms, s.jitter_ms) if s.jitter_ms else 0.0
                when = t + max(0.0, s.delay_ms + jitter) / 1000.0
                self._stats["delayed"] += 1
            if s.rate_kbit:
                start = max(when, active.busy_until[direction])
                if start - when > s.rate_queue_ms / 1000.0:
                    continue  # the queue behind the rate limit is full
                when = start + len(copy) * 8 / (s.rate_kbit * 1000.0)
                active.busy_until[direction] = when
            out.append((when, copy))
        return out


NFT_TABLE = "knemu_chaos"


def partition_rules(partitions: list[tuple[str, str]], peers: Mapping[str, tuple[str, str]]) -> str:
    """The nftables script that makes ``partitions`` true in the node's kernel, for backend
    bgp, whose BGP sessions and pod packets the kernel carries (no agent socket to impair):
    traffic with a partitioned peer's underlay address (BIRD's session) or podCIDR (the pod
    packets it forwards natively) is dropped in the given direction.  ``peers``: node name ->
    (underlay IP, podCIDR).  Replaces the whole table each time (``nft -f``: atomic)."""
    ingress: set[str] = set()
    egress: set[str] = set()
    for peer, direction in partitions:
        for name, (ip, cidr) in peers.items():
            if peer in ("", name):
                if direction in ("ingress", "both"):
                    ingress.update((ip, cidr))
                if direction in ("egress", "both"):
                    egress.update((ip, cidr))
    lines = [f"table ip {NFT_TABLE}", f"delete table ip {NFT_TABLE}", f"table ip {NFT_TABLE} {{"]
    for chain, hook in (("input", "input"), ("output", "output"), ("forward", "forward")):
        lines.append(f"  chain {chain} {{ type filter hook {hook} priority 0; policy accept;")
        if ingress and chain != "output":
            lines.append(f"    ip saddr {{ {', '.join(sorted(ingress))} }} counter drop")
        if egress and chain != "input":
            lines.append(f"    ip daddr {{ {', '.join(sorted(egress))} }} counter drop")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"
