"""The controller manager: every controller of the api-server, run until the cluster is quiet.

``sync(now)`` runs the controllers in dependency order (Deployment -> ReplicaSet ->
DaemonSet -> scheduler -> node lifecycle -> EndpointSlices/Endpoints -> load balancers -> garbage
collector) and repeats the
round while the round wrote anything (the store's resourceVersion moved), at most
``MAX_ROUNDS`` times, so one call settles a whole cascade: a new Deployment becomes a
ReplicaSet, pods, bindings and endpoints in one call.  Everything is sans-I/O: time comes in
as ``now`` and ``next_deadline(now)`` says when a timer (lease expiry, eviction, pod
availability, orphan quarantine) next needs a sync.

Controllers never block serving: ``sync`` takes an ``over_budget()`` callable (the caller's
clock, so this stays sans-I/O).  When the budget of a step is spent, the round stops after
the current controller (and the pod-creating and binding loops stop early); the next
``sync`` call resumes the round at the next controller, so every controller gets its turn
however large the cluster is.  A controller that raises is logged and skipped for that round;
the others still run (one object a controller cannot handle must not stop, say, a new
Service getting its EndpointSlice).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Protocol

from knemu.apiserver.admission.pipeline import Admission
from knemu.apiserver.controllers.common import Context
from knemu.apiserver.controllers.daemonset import DaemonSetController
from knemu.apiserver.controllers.deployment import DeploymentController
from knemu.apiserver.controllers.endpoints import EndpointsController
from knemu.apiserver.controllers.endpointslice import EndpointSliceController
from knemu.apiserver.controllers.gc import GarbageCollector
from knemu.apiserver.controllers.nodelease import NodeLeaseController
from knemu.apiserver.controllers.nodelifecycle import NodeLifecycleController
from knemu.apiserver.controllers.replicaset import ReplicaSetController
from knemu.apiserver.controllers.scheduler import Scheduler
from knemu.apiserver.controllers.service import ServiceController
from knemu.apiserver.controllers.serviceaccount import ServiceAccountController
from knemu.apiserver.nodes import NodeRegistry
from knemu.apiserver.recorder import EventRecorder
from knemu.apiserver.storage.store import Store, StoredEvent
from knemu.config import ApiServerConfig

__all__ = ["MAX_ROUNDS", "PASSIVE_KINDS", "ControllerManager"]

MAX_ROUNDS = 16
log = logging.getLogger("knemu.apiserver.controllers")
PRUNE_EVERY_S = 60.0  # how often expired Events are deleted
# Kinds no controller reacts to: a write of one (a node's Lease heartbeat, an Event) neither
# wakes the controllers nor makes a round run again.  Without this, every heartbeat of every
# node re-ran every controller over every object: O(nodes x objects) work per second.
PASSIVE_KINDS = frozenset({"Lease", "Event"})


def _never() -> bool:
    return False


class Controller(Protocol):
    def sync(self, now: float) -> None: ...


class ControllerManager:
    def __init__(
        self,
        store: Store,
        config: ApiServerConfig,
        registry: NodeRegistry,
        recorder: EventRecorder,
        seed: int = 0,
    ) -> None:
        self._store = store
        admission = Admission(store, config, recorder, seed=seed)
        self._ctx = Context(store, config, recorder, admission, registry, random.Random(seed))
        self.deployments = DeploymentController(self._ctx)
        self.replicasets = ReplicaSetController(self._ctx)
        self.daemonsets = DaemonSetController(self._ctx)
        self.scheduler = Scheduler(self._ctx)
        self.nodes = NodeLifecycleController(self._ctx)
        self.endpoints = EndpointsController(self._ctx)
        self.services = ServiceController(self._ctx)
        self.slices = EndpointSliceController(self._ctx)
        self.gc = GarbageCollector(self._ctx)
        self.leases = NodeLeaseController(self._ctx)
        self._controllers: list[Controller] = [
            self.deployments,
            self.replicasets,
            self.daemonsets,
            self.scheduler,
            self.nodes,
            self.slices,
            self.endpoints,
            self.services,
            self.gc,
            self.leases,
            ServiceAccountController(self._ctx),
        ]
        self.rounds = 0  # rounds run by the last sync (statistics, tests)
        self._recorder = recorder
        self._next_prune: float | None = None
        self._quiet_rv: int | None = None  # resourceVersion at which the last sync settled
        self._quiet_until: float | None = None  # ... and the first timer after it
        self._stats = {
            "syncs": 0,
            "skipped": 0,
            "timers": 0,
            "rounds": 0,
            "unsettled": 0,
            "out_of_budget": 0,
            "failed": 0,
        }
        self._position = 0  # next controller of an unfinished round
        self._round_rv = 0  # changed_rv when that round started
        self.changed_rv = store.resource_version  # rv of the latest write controllers react to
        store.add_listener(self._on_store_event)

    def _on_store_event(self, event: StoredEvent) -> None:
        if event.kind not in PASSIVE_KINDS:
            self.changed_rv = event.rv

    def sync(self, now: float, over_budget: Callable[[], bool] | None = None) -> bool:
        """Run every controller until a round writes nothing (at most MAX_ROUNDS rounds) or
        ``over_budget()`` says this step's time is spent; True once the cluster is quiet."""
        self.rounds = 0
        self._stats["syncs"] += 1
        if self._position == 0 and self._is_quiet(now):
            self._stats["skipped"] += 1
            return True  # nothing changed and no timer is due: every controller is a no-op
        if self._position == 0 and self._timers_only(now):
            self._stats["timers"] += 1
            return True  # only heartbeat timers were due and they changed nothing
        if self._next_prune is None or now >= self._next_prune:
            self._recorder.prune(now)
            self._next_prune = now + PRUNE_EVERY_S
        self._ctx.over_budget = over_budget or _never
        try:
            return self._run_rounds(now, over_budget or _never)
        finally:
            self._ctx.over_budget = _never

    def _run_rounds(self, now: float, over_budget: Callable[[], bool]) -> bool:
        for _ in range(MAX_ROUNDS):
            if self._position == 0:
                self._round_rv = self.changed_rv
            self.rounds += 1
            self._stats["rounds"] += 1
            while self._position < len(self._controllers):
                self._run(self._controllers[self._position], now)
                self._position += 1
                if over_budget() and self._position < len(self._controllers):
                    self._quiet_rv = None
                    self._stats["out_of_budget"] += 1
                    return False  # the next sync resumes this round
            self._position = 0
            if self.changed_rv == self._round_rv:
                self._quiet_rv, self._quiet_until = self._round_rv, self.next_deadline(now)
                return True
            if over_budget():
                self._quiet_rv = None
                self._stats["out_of_budget"] += 1
                return False
        self._quiet_rv = None
        self._stats["unsettled"] += 1  # still writing after MAX_ROUNDS: next sync goes on
        return False

    def _run(self, controller: Controller, now: float) -> None:
        try:
            controller.sync(now)
        except Exception:  # a bug or an object it cannot handle: the others still run
            self._stats["failed"] += 1
            log.exception("%s failed; the other controllers go on", type(controller).__name__)

    def statistics(self) -> dict[str, int]:
        """Counters for metrics: syncs, skipped (quiet), rounds, unsettled syncs, steps that
        ran out of time budget, controller failures, malformed objects skipped."""
        return {**self._stats, "malformed": self._ctx.malformed}

    def _timers_only(self, now: float) -> bool:
        """Nothing changed since the last settled sync and only a heartbeat timer is due
        (a Lease to republish, a lease to check): run just the node lifecycle and Lease
        controllers, O(nodes + pods), instead of a round over every object.  False when
        they wrote something the others react to (a node lost): a full round follows."""
        if self._quiet_rv != self.changed_rv or self._quiet_rv is None:
            return False
        if self._next_prune is not None and now >= self._next_prune:
            return False
        others = (self.replicasets.next_deadline(), self.gc.next_deadline())
        if any(d is not None and d <= now for d in others):
            return False
        self._ctx.over_budget = _never
        self._run(self.nodes, now)
        self._run(self.leases, now)
        if self.changed_rv != self._quiet_rv:
            return False
        self._quiet_until = self.next_deadline(now)
        return True

    def _is_quiet(self, now: float) -> bool:
        """Controllers are functions of the store and time (leases only move later on
        renewal, and a renewal that changes readiness writes the store)."""
        if self._quiet_rv != self.changed_rv:
            return False
        if self._next_prune is not None and now >= self._next_prune:
            return False
        return self._quiet_until is None or now < self._quiet_until

    def next_deadline(self, now: float) -> float | None:
        """When a timer next needs ``sync``: lease expiry, eviction, availability, orphan GC."""
        candidates = [
            self.nodes.next_deadline(now),
            self.replicasets.next_deadline(),
            self.daemonsets.next_deadline(),
            self.gc.next_deadline(),
            self.leases.next_deadline(),
        ]
        due = [d for d in candidates if d is not None]
        return min(due) if due else None
