"""Fixtures for the api-server tests: ``cluster``, the api-server logic on an in-memory store
(see cluster.py); the REST and gRPC fixtures are in rest/ and grpc_api/."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from knemu.apiserver import builtins
from knemu.apiserver.admission.pipeline import Admission
from knemu.apiserver.controllers import ControllerManager
from knemu.apiserver.nodes import NodeRegistry
from knemu.apiserver.recorder import EventRecorder
from knemu.apiserver.storage.store import Store
from knemu.config import ApiServerConfig

from .cluster import T0, Cluster


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    store = Store(":memory:")
    config = ApiServerConfig()
    recorder = EventRecorder(store)
    admission = Admission(store, config, recorder)
    registry = NodeRegistry(store, config, recorder)
    manager = ControllerManager(store, config, registry, recorder, seed=7)
    builtins.bootstrap(store, admission, T0)
    try:
        yield Cluster(store, config, recorder, admission, registry, manager)
    finally:
        store.close()
