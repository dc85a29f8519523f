"""How fast the node lifecycle controller may evict, zone by zone (sans-I/O).

Kubernetes' node lifecycle controller (pkg/controller/nodelifecycle, "Rate limits on
eviction" in https://kubernetes.io/docs/concepts/architecture/nodes/#rate-limits-on-eviction)
does not trust a picture in which many nodes fail at once: that is more often the control
plane's own trouble (a partition, an overloaded api-server) than many machines dying.  Per
zone (``topology.kubernetes.io/zone``, with its region; nodes without one share a zone):

* **Normal**: unreachable nodes are tainted NoExecute (which starts their pods' eviction) at
  ``--node-eviction-rate`` nodes per second (0.1).
* **PartialDisruption**: more than two nodes and at least ``--unhealthy-zone-threshold``
  (0.55) of the zone not Ready: the rate drops to ``--secondary-node-eviction-rate`` (0.01)
  in zones larger than ``--large-cluster-size-threshold`` (50 nodes), and to 0 in smaller ones.
* **FullDisruption**: no node of the zone Ready.  If every zone is fully disrupted the
  controller assumes it is the one cut off: it stops evicting everywhere and takes the
  NoExecute taints off again; otherwise a fully disrupted zone is evicted at the normal rate.

Each zone has its own token bucket (burst 1, as ``flowcontrol.NewTokenBucketRateLimiter``),
fed with ``now``; ``Disruption`` keeps the buckets and answers "may this zone's next node be
tainted now, and if not, when".
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"
UNHEALTHY_ZONE_THRESHOLD = 0.55  # kube-controller-manager --unhealthy-zone-threshold
LARGE_CLUSTER_SIZE = 50  # --large-cluster-size-threshold


class ZoneState(enum.Enum):
    NORMAL = "Normal"
    PARTIAL = "PartialDisruption"
    FULL = "FullDisruption"


def zone_key(labels: Mapping[str, str]) -> str:
    """nodetopology.GetZoneKey: region and zone, "" when the node names neither."""
    region, zone = labels.get(REGION_LABEL, ""), labels.get(ZONE_LABEL, "")
    return f"{region}:\x00:{zone}" if region or zone else ""


def zone_state(ready: int, not_ready: int) -> ZoneState:
    """ComputeZoneState: Full when none is Ready, Partial when more than two and at least the
    threshold are not, else Normal."""
    if ready == 0 and not_ready > 0:
        return ZoneState.FULL
    if not_ready > 2 and not_ready / (ready + not_ready) >= UNHEALTHY_ZONE_THRESHOLD:
        return ZoneState.PARTIAL
    return ZoneState.NORMAL


@dataclass
class _Bucket:
    """A token bucket of burst 1: one token, refilled at ``qps``."""

    qps: float
    tokens: float = 1.0
    at: float | None = None

    def _refill(self, now: float) -> None:
        if self.at is not None and now > self.at:
            self.tokens = min(1.0, self.tokens + (now - self.at) * self.qps)
        self.at = now if self.at is None else max(self.at, now)

    def take(self, now: float) -> bool:
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def next_token(self, now: float) -> float | None:
        self._refill(now)
        if self.tokens >= 1.0:
            return now
        return None if self.qps <= 0 else now + (1.0 - self.tokens) / self.qps


class Disruption:
    """Zone states and per-zone eviction buckets (see the module docstring)."""

    def __init__(self, eviction_qps: float, secondary_qps: float) -> None:
        self._qps = eviction_qps
        self._secondary_qps = secondary_qps
        self._buckets: dict[str, _Bucket] = {}
        self.states: dict[str, ZoneState] = {}
        self._sizes: dict[str, int] = {}

    def observe(self, nodes: Iterable[tuple[str, bool]]) -> None:
        """Recompute every zone's state from (zone key, Ready) pairs of all nodes."""
        counts: dict[str, list[int]] = {}
        for zone, ready in nodes:
            pair = counts.setdefault(zone, [0, 0])
            pair[0 if ready else 1] += 1
        self.states = {zone: zone_state(r, n) for zone, (r, n) in counts.items()}
        self._sizes = {zone: r + n for zone, (r, n) in counts.items()}
        for zone in set(self._buckets) - set(counts):
            del self._buckets[zone]

    @property
    def halted(self) -> bool:
        """Every zone fully disrupted: the controller, not the nodes, is likely cut off."""
        return bool(self.states) and all(s is ZoneState.FULL for s in self.states.values())

    def rate(self, zone: str) -> float:
        """Nodes per second that may be tainted NoExecute in ``zone`` now."""
        state = self.states.get(zone, ZoneState.NORMAL)
        if self.halted:
            return 0.0
        if state is ZoneState.PARTIAL:
            return self._secondary_qps if self._sizes.get(zone, 0) > LARGE_CLUSTER_SIZE else 0.0
        return self._qps

    def _bucket(self, zone: str) -> _Bucket:
        rate = self.rate(zone)
        bucket = self._buckets.get(zone)
        if bucket is None:
            bucket = self._buckets[zone] = _Bucket(rate)
        elif bucket.qps != rate:
            bucket.qps = rate  # SwapLimiter: the tokens carry over to the new rate
        return bucket

    def may_evict(self, zone: str, now: float) -> bool:
        """Take ``zone``'s token if it has one (and evictions there are not stopped)."""
        if self.rate(zone) <= 0:
            return False
        return self._bucket(zone).take(now)

    def next_token(self, zone: str, now: float) -> float | None:
        """When ``zone`` may taint its next node (None: not while the state lasts)."""
        if self.rate(zone) <= 0:
            return None
        return self._bucket(zone).next_token(now)
