from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from swarm_helpers import SwarmStack, swarm_stack, wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="session")
def stack() -> Iterator[SwarmStack]:
    with swarm_stack() as s:
        s.knemu("apply", "-f", "-", stdin=(EXAMPLES / "sample-deployment.yaml").read_text())
        s.knemu("apply", "-f", "-", stdin=(EXAMPLES / "sample-clusterip.yaml").read_text())
        wait_until(lambda: len(ready_pods(s)) == 3, 180, "3 ready replicas")
        yield s


def ready_pods(stack: SwarmStack) -> dict[str, str]:
    """name -> node of the ready sample-app pods."""
    pods = stack.rest("/api/v1/namespaces/default/pods?labelSelector=app%3Dsample-app")["items"]
    out = {}
    for p in pods:
        conds = {c["type"]: c["status"] for c in p.get("status", {}).get("conditions", [])}
        if conds.get("Ready") == "True" and "deletionTimestamp" not in p["metadata"]:
            out[p["metadata"]["name"]] = p["spec"]["nodeName"]
    return out
