"""internalTrafficPolicy: Local on a real 3-node local cluster (`knemu up`), KEP-2086.

The example manifest puts one endpoint on node-1 and one on node-2; node-3 has none.  A client
on node-1 only ever reaches node-1's endpoint, a client on node-3 times out (dropped, not
refused) and node-3 counts it, and the NodePort on node-3's IP still reaches an endpoint.  All
traffic stays inside the cluster's namespaces; the fixture always runs `knemu down`.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from localcluster import LocalCluster, local_cluster, tools_pod

from knemu.testing import wait_until

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(600)]

FROM = re.compile(r"From=(\S+)")
NODE_PORT = 30090
SERVICE = "default/local-web"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("knemu-state")) as c:
        c.apply(tools_pod("tools-1", "node-1"))
        c.apply(tools_pod("tools-3", "node-3"))
        c.apply_file("examples/service-internal-traffic-local.yaml")
        c.wait_ready(2, selector="role=tools")
        c.wait_ready(2, selector="app=local-web")
        wait_until(lambda: all(len(usable(c.table(n))) == 2 for n in ("node-1", "node-3")), 60,
             what="both endpoints in node-1's and node-3's tables")  # fmt: skip
        yield c


def service_of(table: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in table["services"] if s["key"] == SERVICE)


def usable(table: dict[str, Any]) -> set[str]:
    svc = next((s for s in table["services"] if s["key"] == SERVICE), None)
    if svc is None:
        return set()
    return {b["ip"] for p in svc["ports"] for b in p["backends"] if b["usable"]}


def test_a_client_on_node_1_only_reaches_node_1s_endpoint(cluster: LocalCluster) -> None:
    script = "for i in 1 2 3 4 5 6 7 8 9 10; do curl -s -m 5 http://local-web/; echo; done"
    out = cluster.exec("tools-1", script)
    answers = FROM.findall(out.stdout)
    assert answers == ["local-web-1"] * 10, out.stdout + out.stderr


def test_a_client_on_node_3_times_out_and_node_3_counts_it(cluster: LocalCluster) -> None:
    before = cluster.table("node-3")["counters"].get("drop_no_local_endpoints", 0)
    out = cluster.exec("tools-3", "curl -s -m 2 http://local-web/")
    assert out.returncode == 28, out  # timed out: dropped, not refused (that would be 7)
    table = cluster.table("node-3")
    assert table["counters"]["drop_no_local_endpoints"] > before
    svc = service_of(table)
    assert svc["internal_traffic_policy"] == "Local"
    port = svc["ports"][0]
    assert port["no_local_endpoints"] is True
    assert not any(b["local"] or b["usable_internal"] for b in port["backends"])
    flows = cluster.knemu("flows", "node-3", "-o", "json", "--port", "80")
    events = [json.loads(line) for line in flows.stdout.splitlines() if line.strip()]
    drops = [e for e in events if e.get("reason") == "no_local_endpoints"]
    assert drops and drops[-1]["verdict"] == "DROPPED", flows.stdout
    # node-1's table marks its own endpoint local, the other one not.
    rows = {b["node_name"]: (b["local"], b["usable_internal"])
            for b in service_of(cluster.table("node-1"))["ports"][0]["backends"]}  # fmt: skip
    assert rows == {"node-1": (True, True), "node-2": (False, False)}


def test_node_port_on_node_3_still_reaches_an_endpoint(cluster: LocalCluster) -> None:
    url = f"http://{cluster.node_ip(3)}:{NODE_PORT}/"
    seen: set[str] = set()

    def answered() -> bool:
        out = subprocess.run(
            ["ip", "netns", "exec", cluster.node_ns(1), "curl", "-s", "-m", "5", url],
            capture_output=True, text=True, check=False, timeout=30,
        )  # fmt: skip
        match = FROM.search(out.stdout)
        if match is not None:
            seen.add(match.group(1))
        return match is not None

    wait_until(answered, 30, what="an answer on node-3's NodePort")
    for _ in range(9):
        assert answered()
    assert seen <= {"local-web-1", "local-web-2"}
    # and from a pod, through the router's nodeIP:nodePort rule
    out = cluster.exec("tools-3", f"curl -s -m 5 {url}")
    assert FROM.search(out.stdout), out.stdout + out.stderr
