"""knemu as a Docker Swarm stack (compose/stack.yaml) on a single-host swarm made for the test.

Seed 003's scenario across the nodes, the overlay's MTU and /dev/net/tun handled by the agents,
knemu's VXLAN beside Swarm's own, a node killed through the swarm chaos runtime and its slot
coming back as the same node, and `docker service scale` adding and removing nodes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from swarm_helpers import SwarmStack, ready_pods, run, wait_until

pytestmark = [pytest.mark.swarm, pytest.mark.slow]
SERVICE = "default/sample-clusterip"
GRACE_S = 4.0
MARGIN_S = 8.0


def node_containers(stack: SwarmStack) -> dict[str, Any]:
    """task hostname (the node's identity) -> its running container."""
    return {c.attrs["Config"]["Hostname"]: c for c in stack.containers("node")}


def identities(stack: SwarmStack) -> dict[str, str]:
    return {
        n["metadata"]["name"]: n["metadata"]["annotations"]["knemu.dev/identity"]
        for n in stack.nodes()
    }


def chaos(stack: SwarmStack, *args: str, server: str = "") -> str:
    """`knemu chaos --runtime swarm ...` from the host, as a user on a manager runs it."""
    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        if not server:  # an explicit server is one the command does not talk to
            stack.kubeconfig(kubeconfig)
        env = dict(os.environ, KNEMU_SERVER=server or stack.server, KUBECONFIG=str(kubeconfig))
        return _run_chaos(env, stack, *args)


def _run_chaos(env: dict[str, str], stack: SwarmStack, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "knemu.cli", "chaos", "--runtime", "swarm", "--stack", stack.name,
         *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def usable_backends(table: dict[str, Any]) -> set[str]:
    for svc in table["services"]:
        if svc["key"] == SERVICE:
            return {b["ip"] for port in svc["ports"] for b in port["backends"] if b["usable"]}
    return set()


def curl_from_pod(stack: SwarmStack, name: str, url: str) -> str:
    return stack.knemu(
        "run", "--image=amsy810/tools:v2.0", "--restart=Never", "--rm", "-i", name,
        "--command", "--", "curl", "-s", "-m", "5", url,
    )  # fmt: skip


def test_nodes_register_as_their_slots_with_pod_cidrs(stack: SwarmStack) -> None:
    nodes = stack.nodes()
    assert sorted(n["metadata"]["name"] for n in nodes) == ["node-1", "node-2", "node-3"]
    assert sorted(n["spec"]["podCIDR"] for n in nodes) == [
        "10.244.1.0/24",
        "10.244.2.0/24",
        "10.244.3.0/24",
    ]
    service = f"{stack.name}_node"
    assert sorted(identities(stack).values()) == [f"{service}-{i}" for i in (1, 2, 3)]
    addresses = {n["status"]["addresses"][0]["address"] for n in nodes}
    assert all(a.startswith(stack.subnet.rsplit(".", 1)[0] + ".") for a in addresses), addresses


def test_agents_make_dev_net_tun_and_take_the_overlay_mtu(stack: SwarmStack) -> None:
    for hostname, c in node_containers(stack).items():
        logs = c.logs().decode(errors="replace")
        assert "created /dev/net/tun (character device 10:200)" in logs, hostname
        assert "pod MTU 1400: underlay eth0 MTU 1450 minus 50 for VXLAN" in logs, hostname
        mtu = c.exec_run(["cat", "/sys/class/net/knemu0/mtu"]).output.decode().strip()
        assert mtu == "1400", hostname
    pod = next(iter(ready_pods(stack)))
    out = stack.knemu("exec", pod, "--", "cat", "/sys/class/net/eth0/mtu")
    assert out.strip() == "1400"


def test_knemu_vxlan_lives_beside_swarms_data_path_port(stack: SwarmStack) -> None:
    """Both use UDP 4789, in different network namespaces: Swarm's kernel VXLAN socket is the
    host's (0.0.0.0:4789, no process), knemu's is each task's, bound to its overlay address."""
    host = run("ss", "-Hlun", "sport", "= :4789")
    assert "0.0.0.0:4789" in host
    ips = {n["metadata"]["name"]: n["status"]["addresses"][0]["address"] for n in stack.nodes()}
    for c in stack.containers("node"):
        c.reload()
        pid = str(c.attrs["State"]["Pid"])
        inside = run("nsenter", "-t", pid, "-n", "ss", "-Hlunp", "sport", "= :4789")
        assert "knemu" in inside and "0.0.0.0:4789" not in inside, inside
        assert any(f"{ip}:4789" in inside for ip in ips.values()), inside


def test_seed_003_load_balances_across_nodes(stack: SwarmStack) -> None:
    placement = ready_pods(stack)
    assert len(set(placement.values())) >= 2, placement  # spread: traffic crosses the overlay
    ip = stack.knemu(
        "get", "service", "sample-clusterip", "-o", "jsonpath={.spec.clusterIP}"
    ).strip()
    seen: set[str] = set()
    for i in range(15):
        out = curl_from_pod(stack, f"testpod-{i}", f"http://{ip}:8080")
        m = re.search(r"Host=(\S+)\s+Path=/\s+From=(\S+)\s+ClientIP=(\S+)", out)
        assert m, out
        seen.add(m.group(2))
        if seen == set(placement):
            break
    assert seen == set(placement)
    out = curl_from_pod(stack, "dnspod", "http://sample-clusterip.default.svc.cluster.local:8080")
    assert "From=sample-deployment-" in out


def test_stop_and_start_node_freeze_and_thaw_its_task(stack: SwarmStack) -> None:
    assert "frozen (docker pause)" in chaos(stack, "stop-node", "node-3")
    try:
        wait_until(
            lambda: "node-3" not in stack.ready_nodes(), GRACE_S + MARGIN_S, "node-3 NotReady"
        )
    finally:
        assert "thawed" in chaos(stack, "start-node", "node-3")
    wait_until(lambda: "node-3" in stack.ready_nodes(), 30, "node-3 Ready again")


def test_kill_node_endpoints_leave_pods_move_and_the_slot_comes_back(stack: SwarmStack) -> None:
    wait_until(lambda: len(ready_pods(stack)) == 3, 120, "3 ready replicas")
    placement = ready_pods(stack)
    victim = sorted(set(placement.values()))[-1]
    pods = stack.rest("/api/v1/namespaces/default/pods?labelSelector=app%3Dsample-app")["items"]
    victim_ips = {p["status"]["podIP"] for p in pods if p["spec"]["nodeName"] == victim}
    identity = identities(stack)[victim]
    old = node_containers(stack)[identity].id

    out = chaos(stack, "kill-node", victim)
    assert "killed (SIGKILL)" in out and f"{stack.name}_node." in out
    live = [n for n in ("node-1", "node-2", "node-3") if n != victim]

    def gone_everywhere() -> bool:
        return all(not (usable_backends(stack.node_table(n)) & victim_ips) for n in live)

    killed_at = time.monotonic()
    wait_until(gone_everywhere, GRACE_S + MARGIN_S, f"{victim}'s endpoints to leave every table")
    assert time.monotonic() - killed_at < GRACE_S + MARGIN_S
    wait_until(
        lambda: len(ready_pods(stack)) == 3 and victim not in ready_pods(stack).values(),
        90,
        "3 ready replicas on live nodes",
    )
    # Swarm starts the slot again (restart delay 20 s in the test): same identity, same node.
    wait_until(lambda: victim in stack.ready_nodes(), 90, f"{victim} Ready again")
    new = node_containers(stack)[identity].id
    assert new != old
    assert identities(stack)[victim] == identity
    ip = stack.knemu(
        "get", "service", "sample-clusterip", "-o", "jsonpath={.spec.clusterIP}"
    ).strip()
    assert "From=sample-deployment-" in curl_from_pod(stack, "afterkill", f"http://{ip}:8080")


def test_scale_up_adds_a_node_and_scale_down_drains_one(stack: SwarmStack) -> None:
    stack.scale(4)
    wait_until(lambda: len(stack.ready_nodes()) == 4, 120, "4 Ready nodes")
    node4 = next(n for n in stack.nodes() if n["metadata"]["name"] == "node-4")
    assert node4["spec"]["podCIDR"] == "10.244.4.0/24"
    assert node4["metadata"]["annotations"]["knemu.dev/identity"] == f"{stack.name}_node-4"

    stack.scale(3)
    wait_until(lambda: len(stack.containers("node")) == 3, 60, "3 node tasks")
    wait_until(lambda: len(stack.ready_nodes()) == 3, GRACE_S + MARGIN_S, "3 Ready nodes")
    left = sorted({"node-1", "node-2", "node-3", "node-4"} - set(stack.ready_nodes()))
    assert len(left) == 1
    wait_until(
        lambda: len(ready_pods(stack)) == 3 and left[0] not in ready_pods(stack).values(),
        90,
        "3 ready replicas on the remaining nodes",
    )
    # The Node of a removed task stays NotReady, as a real node whose kubelet stopped, until
    # someone deletes it.
    assert f'node "{left[0]}" deleted' in stack.knemu("delete", "node", left[0])
    wait_until(lambda: len(stack.nodes()) == 3, 30, f"{left[0]} gone from the node list")


def test_drain_host_kills_every_node_on_it_at_once_and_activate_brings_them_back(
    stack: SwarmStack,
) -> None:
    """On a single-host swarm the one host runs everything: a drain stops every task (the
    api-server's too), and activating the host brings the same nodes back from its volume."""
    if not stack.own_swarm:
        pytest.skip("draining a host of a swarm the test did not make would disturb others")
    wait_until(lambda: len(stack.ready_nodes()) == 3, 60, "3 Ready nodes")
    host = stack.docker.info()["Name"]
    before = set(stack.ready_nodes())
    out = chaos(stack, "drain-host", host)
    try:
        assert f"host {host}: availability drain" in out
        assert {n for n in before if f"{n}: on {host}, its task stops now" in out} == before
        wait_until(lambda: not stack.containers("node"), 60, "every node task stopped")
    finally:
        # The api-server is drained too; activate-host does not need it (no server: port 9).
        out = chaos(stack, "activate-host", host, server="http://127.0.0.1:9")
    assert out == f"host {host}: availability active\n"
    wait_until(lambda: set(stack.ready_nodes()) >= before, 120, "the same nodes Ready again")
    wait_until(lambda: len(ready_pods(stack)) == 3, 120, "3 ready replicas again")
