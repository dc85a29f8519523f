"""Seed 003 end to end on a 3-node docker compose cluster (the README's main job, as a test)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import yaml
from compose_helpers import COMPOSE, ComposeCluster, wait_until

from knemu import pki, testing

pytestmark = [pytest.mark.compose, pytest.mark.slow]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def apply(cluster: ComposeCluster, name: str) -> str:
    return cluster.knemu("apply", "-f", "-", stdin=(EXAMPLES / name).read_text())


def ready_replicas(cluster: ComposeCluster) -> int:
    out = cluster.knemu(
        "get", "deployment", "sample-deployment", "-o", "jsonpath={.status.readyReplicas}"
    )
    return int(out.strip() or 0)


def test_nodes_register_with_unique_names_and_pod_cidrs(cluster: ComposeCluster) -> None:
    nodes = cluster.rest("/api/v1/nodes")["items"]
    names = sorted(n["metadata"]["name"] for n in nodes)
    cidrs = sorted(n["spec"]["podCIDR"] for n in nodes)
    assert names == ["node-1", "node-2", "node-3"]
    assert cidrs == ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"]
    assert all(
        c.attrs["State"]["Health"]["Status"] in ("healthy", "starting")
        for c in cluster.containers()
    )
    # The settings compose passes on (KNEMU_BACKEND, KNEMU_ENCRYPTION) reach every node.
    table = cluster.node_table("node-1")
    assert table["backend"] == os.environ.get("KNEMU_BACKEND", "vxlan")
    assert table["encryption"] == os.environ.get("KNEMU_ENCRYPTION", "none")


def test_seed_003_load_balances_over_three_replicas(cluster: ComposeCluster) -> None:
    assert "created" in apply(cluster, "sample-deployment.yaml")
    assert "created" in apply(cluster, "sample-clusterip.yaml")
    wait_until(lambda: ready_replicas(cluster) == 3, 120, "3 ready replicas")
    ip = cluster.knemu(
        "get", "service", "sample-clusterip", "-o", "jsonpath={.spec.clusterIP}"
    ).strip()
    pods = cluster.rest("/api/v1/namespaces/default/pods?labelSelector=app%3Dsample-app")["items"]
    replicas = {p["metadata"]["name"] for p in pods}
    seen: set[str] = set()
    for i in range(12):
        out = cluster.knemu(
            "run",
            "--image=amsy810/tools:v2.0",
            "--restart=Never",
            "--rm",
            "-i",
            f"testpod-{i}",
            "--command",
            "--",
            "curl",
            "-s",
            "-m",
            "5",
            f"http://{ip}:8080",
        )
        m = re.search(r"Host=(\S+)\s+Path=/\s+From=(\S+)\s+ClientIP=(\S+)", out)
        assert m, out
        assert m.group(1) == ip
        seen.add(m.group(2))
        if seen == replicas:
            break
    assert seen == replicas


def test_pods_resolve_services_through_cluster_dns(cluster: ComposeCluster) -> None:
    wait_until(lambda: ready_replicas(cluster) == 3, 120, "3 ready replicas")
    out = cluster.knemu(
        "run",
        "--image=amsy810/tools:v2.0",
        "--restart=Never",
        "--rm",
        "-i",
        "dnspod",
        "--command",
        "--",
        "curl",
        "-s",
        "-m",
        "5",
        "http://sample-clusterip.default.svc.cluster.local:8080",
    )
    assert "From=sample-deployment-" in out


def test_the_printed_kubeconfig_is_the_way_in(cluster: ComposeCluster, tmp_path: Path) -> None:
    """`scripts/compose kubeconfig` (the README's first commands) gives the host's CLI the
    cluster CA and admin credentials; without credentials the api-server answers 401."""
    out = subprocess.run([COMPOSE, "kubeconfig"], env=cluster.env, capture_output=True,
                         text=True, check=True, timeout=120).stdout  # fmt: skip
    creds = pki.from_kubeconfig(yaml.safe_load(out))
    assert creds is not None and creds.server == cluster.server
    path = tmp_path / "kubeconfig"
    path.write_text(out)
    env = dict(os.environ, KUBECONFIG=str(path))
    env.pop("KNEMU_SERVER", None)
    nodes = subprocess.run([sys.executable, "-m", "knemu.cli", "get", "nodes"], env=env,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert nodes.returncode == 0 and "node-1" in nodes.stdout, nodes.stderr
    with pytest.raises(urllib.error.HTTPError) as refused:
        testing.rest_open(pki.Credentials(creds.server, creds.ca_pem), "/api/v1/nodes")
    assert refused.value.code == 401
