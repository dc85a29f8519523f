"""BGP with a route reflector (``knemu up --backend bgp --bgp-route-reflector node-1``) on a real
3-node local cluster: node-2 and node-3 each hold one session, to node-1, instead of the full
mesh; node-1 reflects their podCIDRs with the originator's next hop, so pod traffic between
node-2 and node-3 goes directly between them.  All traffic stays in the cluster's namespaces."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator

import pytest
from localcluster import LocalCluster, local_cluster, tools_pod

from knemu.testing import wait_until

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(shutil.which("bird") is None, reason="BIRD 2 not installed (bird2)"),
]
WEB = """apiVersion: v1
kind: Pod
metadata: {name: web-3, labels: {app: web}}
spec:
  nodeName: node-3
  containers: [{name: web, image: nginx}]
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("knemu-bgp-rr")
    with local_cluster(root, nodes=3, backend="bgp", bgp_route_reflector="node-1") as c:
        c.apply(tools_pod("tools-2", "node-2"))
        c.apply(WEB)
        c.wait_ready(2)
        yield c


def sessions(c: LocalCluster, node: str) -> dict[str, str]:
    return {s["peer"]: s["info"] for s in c.table(node).get("bgp", {}).get("sessions", [])}


def learned(c: LocalCluster, node: str) -> dict[str, str]:
    return {r["prefix"]: r["via"] for r in c.table(node).get("bgp", {}).get("routes", [])}


def test_clients_peer_only_with_the_reflector_and_learn_each_other(cluster: LocalCluster) -> None:
    rr = "Mesh_" + cluster.node_ip(1).replace(".", "_")
    for node in ("node-2", "node-3"):

        def one_session(n: str = node) -> bool:
            now = sessions(cluster, n)
            return list(now) == [rr] and now[rr].startswith("Established")

        try:
            wait_until(one_session, 60, what=f"{node}'s one session, to the reflector")
        except TimeoutError as exc:
            state = cluster.state_root / f"cluster-{cluster.name}"
            conf = (state / node / "bgp" / "bird.conf").read_text()
            log = (state / f"{node}.log").read_text()[-3000:]
            status = cluster.table(node).get("bgp")
            raise AssertionError(f"{exc}: {status}\n{conf}\n{log}") from None
    wait_until(lambda: len(sessions(cluster, "node-1")) == 2, 30, what="node-1 serves 2 clients")
    # Reflected with the originator's next hop: node-2 sends node-3's pods straight to node-3.
    wait_until(lambda: learned(cluster, "node-2").get("10.244.3.0/24") == cluster.node_ip(3), 30,
               what="node-2 learns 10.244.3.0/24 via node-3", interval_s=0.5)  # fmt: skip
    wait_until(lambda: learned(cluster, "node-3").get("10.244.2.0/24") == cluster.node_ip(2), 30,
               what="node-3 learns 10.244.2.0/24 via node-2", interval_s=0.5)  # fmt: skip
    status = cluster.knemu("bgp", "node-2").stdout
    assert status.count("Established") == 1, status
    assert re.search(rf"{cluster.node_ip(1)}\s+route reflector\s+up", status), status
    web = cluster.get("/api/v1/namespaces/default/pods/web-3")["status"]["podIP"]
    out = cluster.exec("tools-2", f"curl -s -m 5 -o /dev/null -w '%{{http_code}}' http://{web}/")
    assert out.stdout.strip() == "200", out.stdout + out.stderr
