"""Seed 001's caveat, run: BGP with nodes in two underlay subnets (`knemu up --racks 2`) behind
an emulated top-of-rack router (a namespace that forwards between the racks).  While the router
does not speak BGP, the nodes' sessions across the racks never come up (single-hop iBGP), no
node learns the other rack's podCIDR, and pod traffic across the racks is dropped, `no_route`
in `knemu flows`.  Once the router peers (BIRD in its namespace, eBGP with every node, as
`knemu up --racks 2` does by default), it learns every podCIDR and pods reach each other across
the racks, unencapsulated and un-NATed.  All traffic stays in the cluster's namespaces."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from localcluster import FROM, LocalCluster, tools_pod

from knemu.cli.commands.local_plan import TOR_AS, Cluster
from knemu.node_agent.dataplane.backends import bird
from knemu.testing import wait_until

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(shutil.which("bird") is None, reason="BIRD 2 not installed (bird2)"),
]
WEB = """apiVersion: v1
kind: Pod
metadata: {name: web-2, labels: {app: web}}
spec:
  nodeName: node-2
  containers: [{name: web, image: "nginx:1.16"}]
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("knemu-racks"), nodes=2, backend="bgp", racks=2,
                     tor_peering=False)  # fmt: skip
    try:
        c.up()
        c.apply(tools_pod("tools-1", "node-1"))
        c.apply(WEB)
        c.wait_ready(2)
        yield c
    finally:
        c.down_and_check()


def learned(c: LocalCluster, node: str) -> dict[str, str]:
    return {r["prefix"]: r["via"] for r in c.table(node).get("bgp", {}).get("routes", [])}


def test_bgp_across_racks_fails_visibly_until_the_router_peers(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    plan = Cluster(cluster.name, cluster.subnet, 2, racks=2)
    a, b = (ipaddress.ip_address(cluster.node_ip(n)) for n in (1, 2))
    assert a in plan.rack_nets[0] and b in plan.rack_nets[1]  # two subnets
    web = cluster.get("/api/v1/namespaces/default/pods/web-2")["status"]["podIP"]
    tools = cluster.get("/api/v1/namespaces/default/pods/tools-1")["status"]["podIP"]
    # The router only forwards: node-1's session to node-2 cannot come up, nothing is learned.
    out = cluster.exec("tools-1", f"curl -s -m 3 http://{web}/ || echo unreachable")
    assert "unreachable" in out.stdout, out.stdout
    assert "10.244.2.0/24" not in learned(cluster, "node-1")
    status = cluster.knemu("bgp", "node-1").stdout
    mesh = [line for line in status.splitlines() if "node-to-node mesh" in line]
    assert mesh and "Established" not in mesh[0], status
    flows = cluster.knemu("flows", "node-1", "--ip", web, "--limit", "200").stdout
    assert "reason=no_route" in flows, flows
    # The top-of-rack router peers: BIRD in its namespace, eBGP with both nodes.
    conf, ctl = tmp_path / "tor.conf", tmp_path / "tor.ctl"
    neighbors = [(cluster.node_ip(n), bird.DEFAULT_AS) for n in (1, 2)]
    conf.write_text(bird.render_router(plan.tor_ip(0), TOR_AS, neighbors))
    argv = ["ip", "netns", "exec", plan.tor_ns, "bird", "-f", "-c", str(conf), "-s", str(ctl)]
    tor = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:

        def via_router() -> bool:
            return learned(cluster, "node-1").get("10.244.2.0/24") == plan.tor_ip(0)

        wait_until(via_router, 60, what="node-1 learns node-2's podCIDR from the router")
        wait_until(lambda: learned(cluster, "node-2").get("10.244.1.0/24") == plan.tor_ip(1),
                   30, what="node-2 learns node-1's podCIDR from the router")  # fmt: skip
        out = cluster.exec("tools-1", f"curl -s -m 5 http://{web}/")
        match = FROM.search(out.stdout)
        assert match is not None and match.group(2) == tools, out.stdout + out.stderr
    finally:
        tor.kill()
        tor.wait(10)
