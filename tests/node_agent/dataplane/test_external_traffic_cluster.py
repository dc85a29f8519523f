"""Traffic from outside the cluster on a real 3-node local cluster (`knemu up`): the external
client namespace, externalTrafficPolicy: Local with the client's address kept, and
healthCheckNodePort answers.  examples/service-external-traffic-local.yaml puts one endpoint on
node-1 and one on node-2; node-3 has none.  All traffic stays inside the cluster's namespaces;
the fixture always runs `knemu down`."""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from collections.abc import Iterator

import pytest
from localcluster import LocalCluster, local_cluster

from knemu.testing import wait_until

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(600)]

ECHO = re.compile(r"From=(\S+).*ClientIP=(\S+)")
NODE_PORT = 30091


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("knemu-state")) as c:
        c.apply_file("examples/service-external-traffic-local.yaml")
        c.wait_ready(2, selector="app=etl-web")
        yield c


def external_ip(c: LocalCluster) -> str:
    return str(ipaddress.ip_network(c.subnet).network_address + 2)


def from_outside(c: LocalCluster, *cmd: str) -> subprocess.CompletedProcess[str]:
    """`knemu external -- CMD`, the way a person runs it."""
    return c.knemu("external", "--name", c.name, "--state-dir", str(c.state_root), "--", *cmd,
                   check=False, timeout_s=30)  # fmt: skip


def test_the_external_client_reaches_a_node_port_and_keeps_its_address(
    cluster: LocalCluster,
) -> None:
    c = cluster
    url = f"http://{c.node_ip(1)}:{NODE_PORT}/"
    answers: list[tuple[str, str]] = []

    def answered() -> bool:
        match = ECHO.search(from_outside(c, "curl", "-s", "-m", "3", url).stdout)
        if match is not None:
            answers.append((match.group(1), match.group(2)))
        return match is not None

    wait_until(answered, 60, what="an answer on node-1's Local nodePort from the external client")
    for _ in range(5):
        assert answered()
    assert set(answers) == {("etl-web-1", external_ip(c))}


def test_a_node_without_local_endpoints_drops_and_fails_its_health_check(
    cluster: LocalCluster,
) -> None:
    c = cluster
    out = from_outside(c, "curl", "-s", "-m", "2", f"http://{c.node_ip(3)}:{NODE_PORT}/")
    assert out.returncode == 28, out  # dropped (timed out), not refused
    hc = c.service("etl-web")["spec"]["healthCheckNodePort"]
    for n, status, count in ((1, "200", 1), (2, "200", 1), (3, "503", 0)):

        def probe(n: int = n) -> subprocess.CompletedProcess[str]:
            return from_outside(c, "curl", "-s", "-m", "3", "-w", "\n%{http_code}",
                                f"http://{c.node_ip(n)}:{hc}/")  # fmt: skip

        wait_until(
            lambda s=status: probe().stdout.endswith(s), 30, what=f"node-{n} healthcheck {status}"
        )
        body, code = probe().stdout.rsplit("\n", 1)
        assert code == status and json.loads(body)["localEndpoints"] == count
        assert json.loads(body)["service"] == {"namespace": "default", "name": "etl-web"}


def test_from_inside_the_node_the_relay_still_masquerades(cluster: LocalCluster) -> None:
    c = cluster
    out = subprocess.run(
        ["ip", "netns", "exec", c.node_ns(1), "curl", "-s", "-m", "5",
         f"http://{c.node_ip(1)}:{NODE_PORT}/"],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    match = ECHO.search(out.stdout)
    assert match is not None, out
    assert match.groups() == ("etl-web-1", "10.244.1.1")


def lb_ip(c: LocalCluster) -> str:
    return str(c.service("etl-web")["status"]["loadBalancer"]["ingress"][0]["ip"])


def announcer(c: LocalCluster, nodes: list[str]) -> list[str]:
    ip = lb_ip(c)
    return [n for n in nodes if ip in c.table(n).get("load_balancer_announced", [])]


def test_local_load_balancer_moves_between_nodes_with_endpoints_and_keeps_the_client(
    cluster: LocalCluster,
) -> None:
    """Last in the module: it kills a node.  With externalTrafficPolicy Local only nodes with
    an endpoint may announce (node-1, node-2); when the announcer dies the other one takes the
    address and the pod there still sees the external client's own address."""
    c = cluster
    nodes = ["node-1", "node-2", "node-3"]
    wait_until(
        lambda: len(announcer(c, nodes)) == 1, 30, what="one node announcing etl-web's address"
    )
    (first,) = announcer(c, nodes)
    assert first in ("node-1", "node-2")
    url = f"http://{lb_ip(c)}/"

    def answer() -> tuple[str, str] | None:
        match = ECHO.search(from_outside(c, "curl", "-s", "-m", "3", url).stdout)
        return None if match is None else (match.group(1), match.group(2))

    wait_until(
        lambda: answer() is not None, 30, what="an answer from etl-web's LoadBalancer address"
    )
    assert answer() == (f"etl-web-{first[-1]}", external_ip(c))
    out = c.knemu("chaos", "--runtime", "local", "--cluster", c.name,
                  "--state-dir", str(c.state_root), "kill-node", first)  # fmt: skip
    assert "killed" in out.stdout
    other = "node-2" if first == "node-1" else "node-1"
    wait_until(lambda: announcer(c, [other, "node-3"]) == [other], 60, what=f"{other} announcing")
    wait_until(lambda: answer() is not None, 60, what="an answer after the failover")
    assert answer() == (f"etl-web-{other[-1]}", external_ip(c))
