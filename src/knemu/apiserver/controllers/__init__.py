"""The controller manager: every controller of the api-server, run until the cluster is quiet.

``sync(now)`` runs the controllers in dependency order (Deployment -> ReplicaSet ->
scheduler -> node lifecycle -> EndpointSlices/Endpoints -> load balancers -> garbage
collector) and repeats the
round while the round wrote anything (the store's resourceVersion moved), at most
``MAX_ROUNDS`` times, so one call settles a whole cascade: a new Deployment becomes a
ReplicaSet, pods, bindings and endpoints in one call.  Everything is sans-I/O: time comes in
as ``now`` and ``next_deadline(now)`` says when a timer (lease expiry, eviction, pod
availability, orphan quarantine) next needs a sync.
"""

from __future__ import annotations

import random
from typing import Protocol

from knemu.apiserver.admission.pipeline import Admission
from knemu.apiserver.controllers.common import Context
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
from knemu.apiserver.storage.store import Store
from knemu.config import ApiServerConfig

__all__ = ["MAX_ROUNDS", "ControllerManager"]

MAX_ROUNDS = 16
PRUNE_EVERY_S = 60.0  # how often expired Events are deleted


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
        self._stats = {"syncs": 0, "skipped": 0, "rounds": 0, "unsettled": 0}

    def sync(self, now: float) -> None:
        """Run every controller until a round writes nothing (at most MAX_ROUNDS rounds)."""
        self.rounds = 0
        self._stats["syncs"] += 1
        if self._is_quiet(now):
            self._stats["skipped"] += 1
            return  # nothing changed and no timer is due: every controller would be a no-op
        if self._next_prune is None or now >= self._next_prune:
            self._recorder.prune(now)
            self._next_prune = now + PRUNE_EVERY_S
        for _ in range(MAX_ROUNDS):
            before = self._store.resource_version
            self.rounds += 1
            self._stats["rounds"] += 1
            for controller in self._controllers:
                controller.sync(now)
            if self._store.resource_version == before:
                self._quiet_rv, self._quiet_until = before, self.next_deadline(now)
                return
        self._quiet_rv = None
        self._stats["unsettled"] += 1  # still writing after MAX_ROUNDS: next sync goes on

    def statistics(self) -> dict[str, int]:
        """Counters for metrics: syncs, skipped (quiet), rounds, unsettled syncs."""
        return dict(self._stats)

    def _is_quiet(self, now: float) -> bool:
        """Controllers are functions of the store and time (leases only move later on
        renewal, and a renewal that changes readiness writes the store)."""
        if self._quiet_rv != self._store.resource_version:
            return False
        if self._next_prune is not None and now >= self._next_prune:
            return False
        return self._quiet_until is None or now < self._quiet_until

    def next_deadline(self, now: float) -> float | None:
        """When a timer next needs ``sync``: lease expiry, eviction, availability, orphan GC."""
        candidates = [
            self.nodes.next_deadline(now),
            self.replicasets.next_deadline(),
            self.gc.next_deadline(),
            self.leases.next_deadline(),
        ]
        due = [d for d in candidates if d is not None]
        return min(due) if due else None
