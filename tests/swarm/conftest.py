from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from swarm_helpers import SwarmStack, ready_pods, swarm_stack, wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def stack() -> Iterator[SwarmStack]:
    with swarm_stack() as s:
        s.knemu("apply", "-f", "-", stdin=(EXAMPLES / "sample-deployment.yaml").read_text())
        s.knemu("apply", "-f", "-", stdin=(EXAMPLES / "sample-clusterip.yaml").read_text())
        wait_until(lambda: len(ready_pods(s)) == 3, 180, "3 ready replicas")
        yield s
