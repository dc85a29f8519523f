"""Seed 003 end to end on a real local cluster (`knemu up`: node agents in namespaces).

`knemu run ... --rm -i testpod --command -- curl -s http://CLUSTER-IP:8080` must print the
echo server's reply from one of the deployment's pods, then `pod "testpod" deleted`, exactly
as in the seed; `knemu exec` must return the remote exit code.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from knemu.cli import main
from knemu.cli.client import ApiClient, resolve_kind
from knemu.testing import wait_until

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
pytestmark = [pytest.mark.netns, pytest.mark.slow]


def _free_subnet() -> str:
    """A 192.168.X.0/24 that no interface of this machine uses."""
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True)
    taken = [ipaddress.ip_interface(m).network for m in re.findall(r"inet (\S+)", used.stdout)]
    for third in range(120, 250):
        net = ipaddress.ip_network(f"192.168.{third}.0/24")
        if not any(net.overlaps(t) for t in taken):
            return str(net)
    raise RuntimeError("no free 192.168.X.0/24 subnet for a test cluster")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    name = f"kt{secrets.token_hex(2)}"
    state = str(tmp_path_factory.mktemp("kt-up"))
    subnet = _free_subnet()
    try:
        assert (
            main(["up", "--nodes", "2", "--name", name, "--subnet", subnet, "--state-dir", state])
            == 0
        )
        yield f"https://{ipaddress.ip_network(subnet)[1]}:6443"
    finally:
        main(["down", "--name", name, "--state-dir", state])


def test_seed_003_curl_through_the_cluster_ip(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [
        "-f",
        str(EXAMPLES / "sample-deployment.yaml"),
        "-f",
        str(EXAMPLES / "sample-clusterip.yaml"),
    ]
    assert main(["apply", "--server", server, *files]) == 0
    client = ApiClient(server)

    def ready() -> str | None:
        pods = client.list(resolve_kind("pods"), "default", "app=sample-app")["items"]
        ep = client.find(resolve_kind("ep"), "default", "sample-clusterip") or {}
        addresses = [a for s in ep.get("subsets") or [] for a in s.get("addresses") or []]
        running = [p for p in pods if p["status"].get("phase") == "Running"]
        return pods[0]["metadata"]["name"] if len(running) == 3 == len(addresses) else None

    pod = str(wait_until(ready, 30.0, what="3 ready endpoints", interval_s=0.1))
    cluster_ip = client.get(resolve_kind("svc"), "default", "sample-clusterip")["spec"]["clusterIP"]
    capsys.readouterr()
    code = main(
        [
            "run",
            "--server",
            server,
            "--image=amsy810/tools:v2.0",
            "--restart=Never",
            "--rm",
            "-i",
            "testpod",
            "--command",
            "--",
            "curl",
            "-s",
            f"http://{cluster_ip}:8080",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    reply, deleted = out.splitlines()
    assert re.fullmatch(
        rf"Host={re.escape(cluster_ip)}  Path=/  From=sample-deployment-\S+  "
        r"ClientIP=10\.244\.\d+\.\d+  XFF=",
        reply,
    ), reply
    assert deleted == 'pod "testpod" deleted'

    code = main(
        ["exec", "--server", server, pod, "--", "sh", "-c", "echo out; echo err >&2; exit 3"]
    )
    captured = capsys.readouterr()
    assert (code, captured.out, captured.err) == (3, "out\n", "err\n")
