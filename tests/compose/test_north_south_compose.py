"""North-south traffic on a 3-node docker compose cluster, from the compose `external` service
(a container on the underlay outside every node): a NodePort on every node, a LoadBalancer
address (from the node subnet's pool, KNEMU_LB_POOL) announced MetalLB-L2 style, and an Ingress
whose controller runs as pods behind a LoadBalancer Service.  Every network is internal;
nothing leaves the machine."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest
from compose_helpers import ComposeCluster, wait_until

pytestmark = [pytest.mark.compose, pytest.mark.slow, pytest.mark.timeout(900)]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ECHO = re.compile(r"Path=(\S*)\s+From=(\S+)\s+ClientIP=(\S+)\s+XFF=(\S*)")


def apply(cluster: ComposeCluster, name: str) -> None:
    cluster.knemu("apply", "-f", "-", stdin=(EXAMPLES / name).read_text())


def from_outside(cluster: ComposeCluster, url: str) -> str:
    code, out = cluster.container("external").exec_run(["curl", "-s", "-m", "5", url])
    return str(out.decode(errors="replace")) if code == 0 else ""


def answered_by(cluster: ComposeCluster, url: str, prefix: str) -> re.Match[str] | None:
    m = ECHO.search(from_outside(cluster, url))
    return m if m and m.group(2).startswith(prefix) else None


def test_the_external_client_is_healthy_and_outside_every_node(cluster: ComposeCluster) -> None:
    external = cluster.container("external")

    def healthy() -> bool:
        external.reload()
        return bool(external.attrs["State"]["Health"]["Status"] == "healthy")

    wait_until(healthy, 60, "the external client's healthcheck")
    node_ips = {cluster.ip_of(c) for c in cluster.containers("node")}
    assert cluster.ip_of(external) not in node_ips


def lb_ip(cluster: ComposeCluster, namespace: str, name: str) -> str:
    svc = cluster.rest(f"/api/v1/namespaces/{namespace}/services/{name}")
    return str((svc["status"].get("loadBalancer", {}).get("ingress") or [{}])[0].get("ip", ""))


def test_node_port_and_load_balancer_from_outside(cluster: ComposeCluster) -> None:
    apply(cluster, "north-south/myapp-deployment.yaml")
    apply(cluster, "seed-002/myapp-service-nodeport.yaml")
    # the example asks for 192.0.2.50; here the address comes from the node subnet's pool
    text = (EXAMPLES / "service-load-balancer.yaml").read_text()
    cluster.knemu("apply", "-f", "-", stdin=text.replace("  loadBalancerIP: 192.0.2.50\n", ""))
    for node in cluster.containers("node"):
        url = f"http://{cluster.ip_of(node)}:30008/"
        wait_until(lambda url=url: answered_by(cluster, url, "myapp-"), 120, f"NodePort {url}")
    lb = wait_until(lambda: lb_ip(cluster, "default", "lb-web"), 60, "lb-web's address")
    assert ipaddress.ip_address(lb) in ipaddress.ip_network(cluster.subnet)
    wait_until(lambda: answered_by(cluster, f"http://{lb}/", "lb-web-"), 120,
               f"the LoadBalancer address {lb}")  # fmt: skip


def test_ingress_routes_two_paths_from_outside(cluster: ComposeCluster) -> None:
    apply(cluster, "ingress/ingress-controller.yaml")
    apply(cluster, "ingress/cafe.yaml")

    lb = wait_until(lambda: lb_ip(cluster, "ingress-knemu", "knemu-ingress"), 60,
                    "the ingress controller's LoadBalancer address")  # fmt: skip

    def published() -> bool:
        ing = cluster.rest("/apis/networking.k8s.io/v1/namespaces/default/ingresses/cafe")
        return bool(ing.get("status", {}).get("loadBalancer", {}).get("ingress") == [{"ip": lb}])

    wait_until(published, 180, "Ingress cafe's status.loadBalancer (controller pods running)")
    coffee = wait_until(lambda: answered_by(cluster, f"http://{lb}/coffee", "coffee-"), 120,
                        f"http://{lb}/coffee")  # fmt: skip
    assert answered_by(cluster, f"http://{lb}/tea", "tea-")
    assert coffee.group(4) == cluster.ip_of(cluster.container("external"))  # XFF: the client
