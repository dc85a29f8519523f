"""A 24-node local cluster (`knemu up`): it comes up, a rollout evicts nothing and leaves every
node Ready with no flapping afterwards, and a change reaches every node's kube-proxy table.

(On a machine loaded far beyond its cores, a node can still be marked NotReady for a second or
two during the rollout itself: its heartbeats are read late.  What must hold is that nothing is
evicted for it and that the cluster settles; the bench counts those NodeNotReady events.)

The 100- and 200-node figures come from `bench/bench_scale.py`; this is the behaviour at a
size CI can afford (about a minute).  All traffic stays inside the cluster's namespaces.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from localcluster import LocalCluster, local_cluster

from knemu.testing import wait_until

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(400)]

NODES = 24
PODS = 2 * NODES


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("knemu-state"), nodes=NODES, up_timeout_s=150) as c:
        yield c


def node_not_ready_count(c: LocalCluster) -> int:
    """How many times a node was declared NotReady (repeats are counted on one Event)."""
    return sum(
        int(e.get("count") or 1)
        for e in c.get("/api/v1/events")["items"]
        if e.get("reason") == "NodeNotReady" and e.get("involvedObject", {}).get("kind") == "Node"
    )


def ready_nodes(c: LocalCluster) -> set[str]:
    return {
        n["metadata"]["name"]
        for n in c.get("/api/v1/nodes")["items"]
        if any(x["type"] == "Ready" and x["status"] == "True" for x in n["status"]["conditions"])
    }


ROLLOUT = f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {PODS}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: web, image: "nginx:1.16", ports: [{{containerPort: 80}}]}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec: {{selector: {{app: web}}, ports: [{{port: 80, targetPort: 80}}]}}
"""


def applied_everywhere(c: LocalCluster, key: str, rv: int) -> bool:
    """Every node's table holds ``key`` ("Kind/ns/name") at resourceVersion ``rv`` or later."""
    return all(
        c.table(n).get("applied", {}).get(key, {}).get("rv", 0) >= rv for n in c.node_names()
    )


def test_a_rollout_spreads_over_every_node_and_no_node_flaps(cluster: LocalCluster) -> None:
    c = cluster
    assert len(ready_nodes(c)) == NODES
    c.apply(ROLLOUT)
    pods = c.wait_ready(PODS, selector="app=web", timeout_s=240)
    assert len({p["spec"]["nodeName"] for p in pods}) >= NODES // 2  # spread, not piled up
    # The slice as it is now (every endpoint ready) is in every node's table.
    (slice_,) = c.get(
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
        "?labelSelector=kubernetes.io%2Fservice-name%3Dweb"
    )["items"]
    key = f"EndpointSlice/default/{slice_['metadata']['name']}"
    rv = int(slice_["metadata"]["resourceVersion"])
    wait_until(lambda: applied_everywhere(c, key, rv), 60, what=f"{key} rv {rv} on every node")
    assert not [e for e in c.get("/api/v1/events")["items"]
                if e.get("reason") == "TaintManagerEviction"]  # fmt: skip
    assert len(c.pods(selector="app=web")) == PODS  # nothing evicted, nothing re-created
    # An idle stretch of two grace periods (the default grace is 4 s) after the rollout:
    # observed, not waited for.  No node leaves Ready, no new NodeNotReady event.
    flaps = node_not_ready_count(c)
    end = time.monotonic() + 8.0
    while time.monotonic() < end:
        assert ready_nodes(c) == set(c.node_names())
        time.sleep(0.5)
    assert node_not_ready_count(c) == flaps


def test_a_new_service_reaches_every_nodes_table(cluster: LocalCluster) -> None:
    c = cluster
    fresh = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "fresh"},
             "spec": {"ports": [{"port": 8080}]}}  # fmt: skip
    reply = c.post("/api/v1/namespaces/default/services", fresh)
    rv = int(reply["metadata"]["resourceVersion"])
    wait_until(lambda: applied_everywhere(c, "Service/default/fresh", rv), 60, what="Service fresh")
    for node in c.node_names():
        table = c.table(node)
        applied = table["applied"]["Service/default/fresh"]
        assert applied["rv"] == rv and applied["at"] <= time.time()
        cluster_ip = reply["spec"]["clusterIP"]
        assert any(cluster_ip in str(s) for s in table.get("services", [])), node
