"""Seed 002's Service types end to end on a real 3-node local cluster, each from where seed 002
says its clients are: ClusterIP from a pod, NodePort and LoadBalancer from the external client
(examples/north-south/myapp-deployment.yaml walks through the same steps).  All traffic stays
inside the cluster's namespaces; the fixture always runs `knemu down`."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import pytest
from localcluster import LocalCluster, local_cluster, tools_pod

from knemu.testing import wait_until

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(600)]

FROM = re.compile(r"From=(myapp-\S+)")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("knemu-state")) as c:
        c.apply(tools_pod("tools-1", "node-1"))
        c.apply_file("examples/north-south/myapp-deployment.yaml")
        c.wait_ready(3, selector="app=myapp")
        c.wait_ready(1, selector="role=tools")
        yield c


def from_outside(c: LocalCluster, url: str) -> subprocess.CompletedProcess[str]:
    return c.knemu("external", "--name", c.name, "--state-dir", str(c.state_root), "--",
                   "curl", "-s", "-m", "3", url, check=False, timeout_s=30)  # fmt: skip


def served(get: object) -> set[str]:
    """Pods that answered 12 requests (after a first answer within a deadline)."""
    assert callable(get)
    wait_until(lambda: FROM.search(get().stdout) is not None, 60, what="a first answer")
    return {m.group(1) for _ in range(12) if (m := FROM.search(get().stdout))}


def test_each_service_type_from_its_clients(cluster: LocalCluster) -> None:
    c = cluster
    c.apply_file("examples/seed-002/myapp-service-clusterip.yaml")
    inside = served(lambda: c.exec("tools-1", "curl -s -m 3 http://myapp-service/"))
    assert len(inside) >= 2
    c.knemu("delete", "svc", "myapp-service")
    c.apply_file("examples/seed-002/myapp-service-nodeport.yaml")
    for n in (1, 2, 3):
        assert served(lambda n=n: from_outside(c, f"http://{c.node_ip(n)}:30008/"))
    c.knemu("delete", "svc", "myapp-service")
    c.apply_file("examples/seed-002/myapp-service-loadbalancer.yaml")
    # `apply` leaves status alone, as kubectl does: the address is the pool's, not the seed's
    # example 192.0.2.127, and it is read from status.loadBalancer.ingress as a user would.
    # The service controller fills it in after the create, as a cloud's does: wait as
    # `kubectl get svc -w` would.
    wait_until(lambda: c.service("myapp-service")["status"].get("loadBalancer", {}).get("ingress"),
               30, what="myapp-service's load-balancer address")  # fmt: skip
    (ingress,) = c.service("myapp-service")["status"]["loadBalancer"]["ingress"]
    assert ingress["ip"].startswith("192.0.2.")
    assert len(served(lambda: from_outside(c, f"http://{ingress['ip']}/"))) >= 2
