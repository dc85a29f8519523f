"""`knemu patch` and `knemu scale` against a real api-server with fake nodes."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from knemu.cli import main
from knemu.cli.client import ApiClient, resolve_kind
from knemu.testing import wait_until

from ..cluster_thread import Cluster, cluster_in_thread

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
Run = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster_in_thread(tmp_path_factory.mktemp("kt-patch"), nodes=2) as c:
        yield c


@pytest.fixture
def knemu(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> Run:
    ns = f"kt-{secrets.token_hex(3)}"
    ApiClient(cluster.rest_url).create(
        resolve_kind("ns"),
        None,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
    )

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([argv[0], "--server", cluster.rest_url, "-n", ns, *argv[1:]])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _get(knemu: Run, *what: str) -> Any:
    code, out, err = knemu("get", *what, "-o", "json")
    assert code == 0, err
    return json.loads(out)


def test_patch_service_type_and_ports_merge_on_their_keys(knemu: Run) -> None:
    assert knemu("apply", "-f", str(EXAMPLES / "sample-clusterip-multi.yaml"))[0] == 0
    before = _get(knemu, "svc", "sample-clusterip-multi")["spec"]
    code, out, err = knemu(
        "patch", "svc", "sample-clusterip-multi", "-p",
        '{"spec": {"type": "NodePort", "ports": [{"port": 8080, "nodePort": 30123}]}}',
    )  # fmt: skip
    assert code == 0, err
    assert out == "service/sample-clusterip-multi patched\n"
    after = _get(knemu, "svc", "sample-clusterip-multi")["spec"]
    assert after["type"] == "NodePort"
    # The strategic merge kept the other port and the targetPort of the patched one.
    assert [p["port"] for p in after["ports"]] == [p["port"] for p in before["ports"]]
    patched = next(p for p in after["ports"] if p["port"] == 8080)
    assert patched["nodePort"] == 30123 and patched["targetPort"] == 80
    assert after["clusterIP"] == before["clusterIP"]


def test_patch_types_no_change_and_errors(knemu: Run) -> None:
    assert knemu("apply", "-f", str(EXAMPLES / "sample-clusterip.yaml"))[0] == 0
    code, out, _ = knemu(
        "patch",
        "svc/sample-clusterip",
        "--type",
        "merge",
        "-p",
        "metadata:\n  labels: {tier: front}",
    )
    assert code == 0 and out.endswith("patched\n")
    assert _get(knemu, "svc", "sample-clusterip")["metadata"]["labels"] == {"tier": "front"}
    code, out, _ = knemu(
        "patch", "svc", "sample-clusterip", "-p", '{"metadata": {"labels": {"tier": "front"}}}'
    )
    assert code == 0 and out.endswith("patched (no change)\n")
    op = '[{"op": "replace", "path": "/spec/sessionAffinity", "value": "ClientIP"}]'
    assert knemu("patch", "svc", "sample-clusterip", "--type", "json", "-p", op)[0] == 0
    assert _get(knemu, "svc", "sample-clusterip")["spec"]["sessionAffinity"] == "ClientIP"

    code, _, err = knemu("patch", "svc", "sample-clusterip", "--type", "json", "-p", '{"a": 1}')
    assert code != 0 and "must be a list of operations" in err
    code, _, err = knemu(
        "patch", "svc", "sample-clusterip", "-p", '{"spec": {"ports": [{"port": 99999}]}}'
    )
    assert code != 0 and "port" in err  # validation names the field
    code, _, err = knemu("patch", "svc", "nothing-here", "-p", "{}")
    assert code != 0 and "not found" in err


def test_scale_a_deployment_up_and_down(knemu: Run) -> None:
    assert knemu("apply", "-f", str(EXAMPLES / "sample-deployment.yaml"))[0] == 0

    def ready(n: int) -> Callable[[], bool]:
        return lambda: (
            _get(knemu, "deploy", "sample-deployment").get("status", {}).get("readyReplicas", 0)
            == n
            and len(_get(knemu, "pods")["items"]) == n
        )

    wait_until(ready(3), 20.0, what="3 replicas")
    code, out, err = knemu("scale", "deployment", "sample-deployment", "--replicas", "5")
    assert code == 0 and out == "deployment.apps/sample-deployment scaled\n", err
    wait_until(ready(5), 20.0, what="5 replicas")
    code, _, err = knemu(
        "scale", "deploy/sample-deployment", "--replicas", "1", "--current-replicas", "4"
    )
    assert code != 0 and "expected replicas to be 4, was 5" in err
    assert (
        knemu("scale", "deploy/sample-deployment", "--replicas", "1", "--current-replicas", "5")[0]
        == 0
    )
    wait_until(ready(1), 20.0, what="1 replica")
    code, _, err = knemu("scale", "svc", "x", "--replicas", "1")
    assert code != 0 and "cannot be scaled" in err
