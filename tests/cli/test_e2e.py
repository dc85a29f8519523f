"""The seed 003 walk-through with `knemu` for `kubectl`, against a real api-server.

Nodes are knemu.testing.FakeNodes (registered, leased, reporting pods Running with podCIDR
addresses), so scheduling, ReplicaSets, EndpointSlices and IPAM are the real controllers.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from knemu.cli import main
from knemu.cli.client import ApiClient, resolve_kind
from knemu.testing import wait_until

from .cluster_thread import Cluster, cluster_in_thread

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEADLINE_S = 20.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster_in_thread(tmp_path_factory.mktemp("kt-cli"), nodes=2) as c:
        yield c


@pytest.fixture
def ns(cluster: Cluster) -> str:
    """A fresh namespace per test, so tests do not see each other's objects."""
    name = f"kt-{secrets.token_hex(3)}"
    ApiClient(cluster.rest_url).create(
        resolve_kind("ns"),
        None,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    return name


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def knemu(cluster: Cluster, ns: str, capsys: pytest.CaptureFixture[str]) -> Run:
    def run(*argv: str, namespace: bool = True) -> tuple[int, str, str]:
        capsys.readouterr()
        extra = ["--server", cluster.rest_url] + (["-n", ns] if namespace else [])
        code = main([argv[0], *extra, *argv[1:]])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _running_pods(knemu: Run, expected: int) -> list[str]:
    def check() -> list[str] | None:
        code, out, _ = knemu("get", "pods", "--no-headers")
        rows = [line.split() for line in out.splitlines()]
        ok = code == 0 and len(rows) == expected and all(r[1:3] == ["1/1", "Running"] for r in rows)
        return [r[0] for r in rows] if ok else None

    return list(wait_until(check, DEADLINE_S, what=f"{expected} running pods"))


def _describe_endpoints(knemu: Run, service: str, count: int) -> list[str]:
    def check() -> list[str] | None:
        _, out, _ = knemu("describe", "service", service)
        line = next(x for x in out.splitlines() if x.startswith("Endpoints:"))
        value = line.split(None, 1)[1]
        return value.split(",") if value != "<none>" and len(value.split(",")) == count else None

    return list(wait_until(check, DEADLINE_S, what=f"{count} endpoints of {service}"))


def test_seed_003_deployment_and_clusterip(knemu: Run, ns: str) -> None:
    code, out, _ = knemu("apply", "-f", str(EXAMPLES / "sample-deployment.yaml"))
    assert (code, out) == (0, "deployment.apps/sample-deployment created\n")
    names = _running_pods(knemu, 3)
    assert all(re.fullmatch(r"sample-deployment-[0-9a-f]+-[a-z0-9]{5}", n) for n in names)

    code, out, _ = knemu("get", "pods")
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert header.index("READY") == len(names[0]) + 3  # tabwriter padding 3
    assert len(rows) == 3

    code, out, _ = knemu("get", "pods", names[0], "-o", "jsonpath={.metadata.labels}")
    template_hash = names[0].split("-")[2]
    assert out == f'{{"app":"sample-app","pod-template-hash":"{template_hash}"}}'

    code, out, _ = knemu("apply", "-f", str(EXAMPLES / "sample-clusterip.yaml"))
    assert (code, out) == (0, "service/sample-clusterip created\n")
    code, out, _ = knemu("get", "services", "sample-clusterip")
    header, row = out.splitlines()
    assert header.split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    name, kind, cluster_ip, external, ports, _age = row.split()
    assert (name, kind, external, ports) == ("sample-clusterip", "ClusterIP", "<none>", "8080/TCP")
    assert cluster_ip.startswith("10.")

    code, out, _ = knemu(
        "get",
        "pods",
        "-l",
        "app=sample-app",
        "-o",
        "custom-columns=NAME:{metadata.name},IP:{status.podIP}",
    )
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "IP"]
    ips = sorted(r.split()[1] for r in rows)
    assert len(ips) == 3 and all(ip.startswith("10.244.") for ip in ips)

    endpoints = _describe_endpoints(knemu, "sample-clusterip", 3)
    assert sorted(endpoints) == sorted(f"{ip}:80" for ip in ips)
    _, out, _ = knemu("describe", "service", "sample-clusterip")
    lines = dict(re.split(r":\s+", x, maxsplit=1) for x in out.splitlines() if ":  " in x)
    assert lines["Name"] == "sample-clusterip" and lines["Namespace"] == ns
    assert lines["Selector"] == "app=sample-app" and lines["Type"] == "ClusterIP"
    assert lines["IP"] == cluster_ip and lines["Port"] == "http-port  8080/TCP"
    assert lines["TargetPort"] == "80/TCP" and lines["Session Affinity"] == "None"
    assert out.splitlines()[0].index("sample-clusterip") == len("Session Affinity:") + 2

    code, out, _ = knemu("apply", "-f", str(EXAMPLES / "sample-clusterip.yaml"))
    assert out == "service/sample-clusterip unchanged\n"


def test_named_target_ports_resolve_per_pod(knemu: Run) -> None:
    code, out, _ = knemu(
        "apply",
        "-f",
        str(EXAMPLES / "sample-named-port-pods.yaml"),
        "-f",
        str(EXAMPLES / "sample-named-port-service.yaml"),
    )
    assert code == 0
    assert out.splitlines() == [
        "pod/sample-named-port-pod-80 created",
        "pod/sample-named-port-pod-81 created",
        "service/sample-named-port-service created",
    ]
    _running_pods(knemu, 2)
    _, out, _ = knemu("get", "pods", "-o", "wide", "--no-headers")
    ip_of = {row.split()[0]: row.split()[5] for row in out.splitlines()}
    endpoints = _describe_endpoints(knemu, "sample-named-port-service", 2)
    assert sorted(endpoints) == sorted(
        [f"{ip_of['sample-named-port-pod-80']}:80", f"{ip_of['sample-named-port-pod-81']}:81"]
    )
    _, out, _ = knemu("describe", "service", "sample-named-port-service")
    assert "TargetPort:        http/TCP" in out


def test_multi_document_apply_is_all_or_nothing(knemu: Run, tmp_path: Path) -> None:
    manifest = tmp_path / "kt-two.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: good}\n"
        "spec: {ports: [{port: 80}], selector: {app: a}}\n---\n"
        "apiVersion: v1\nkind: Service\nmetadata: {name: bad}\n"
        "spec: {ports: [{port: 70000}], selector: {app: a}}\n"
    )
    code, out, err = knemu("apply", "-f", str(manifest))
    assert code == 1 and out == ""
    first = err.splitlines()[0]
    assert first.startswith(f"error: {manifest}: document 2 (Service/bad): spec.ports[0].port: ")
    assert err.splitlines()[-1] == "error: nothing was applied"
    code, _, err = knemu("get", "svc", "good")
    assert code == 1
    assert err == 'Error from server (NotFound): services "good" not found\n'


def test_bad_inputs_are_reported_per_document(knemu: Run, tmp_path: Path, ns: str) -> None:
    broken = tmp_path / "kt-broken.yaml"
    broken.write_text("apiVersion: v1\nkind: Pod\nmetadata:\n  name: [x\n")
    code, _, err = knemu("apply", "-f", str(broken))
    assert code == 1 and err.startswith(f"error: {broken}: line ")
    odd = tmp_path / "kt-odd.yaml"
    odd.write_text(
        "apiVersion: v1\nkind: Widget\nmetadata: {name: w}\n---\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: elsewhere}\n"
        "spec: {containers: [{name: c, image: nginx}]}\n---\n"
        "apiVersion: v1\nkind: ConfigMap\n"
    )
    code, out, err = knemu("apply", "-f", str(odd))
    lines = err.splitlines()
    assert code == 1 and out == ""
    assert lines[0].startswith(f'error: {odd}: document 1 (Widget/w): no kind "Widget"')
    assert lines[1].startswith(f"error: {odd}: document 2 (Pod/p): the namespace from the provided")
    assert lines[2] == f"error: {odd}: document 3 (ConfigMap/?): metadata.name: Required value"


@pytest.fixture
def myapp_service(knemu: Run) -> Iterator[str]:
    """Seed 002's Service holds NodePort 30008, which is cluster-wide: deleted after the test."""
    yield "myapp-service"
    knemu("delete", "svc", "myapp-service")


@pytest.mark.usefixtures("myapp_service")
def test_apply_configures_and_keeps_allocated_fields(knemu: Run, tmp_path: Path) -> None:
    code, out, _ = knemu("apply", "-f", str(EXAMPLES / "seed-002" / "myapp-service-nodeport.yaml"))
    assert (code, out) == (0, "service/myapp-service created\n")
    client_out = knemu("get", "svc", "myapp-service", "-o", "jsonpath={.spec.clusterIP}")[1]
    changed = tmp_path / "kt-np.yaml"
    changed.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: myapp-service, labels: {tier: web}}\n"
        "spec: {type: NodePort, ports: [{port: 80, targetPort: 8080, nodePort: 30008}],"
        " selector: {app: myapp, type: frontend}}\n"
    )
    code, out, _ = knemu("apply", "-f", str(changed))
    assert (code, out) == (0, "service/myapp-service configured\n")
    _, row, _ = knemu("get", "svc", "--no-headers", "--show-labels")
    assert row.split()[1:5] == ["NodePort", client_out, "<none>", "80:30008/TCP"]
    assert row.split()[-1] == "tier=web"
    template = "{.spec.ports[0].targetPort} {.spec.clusterIP}"
    assert knemu("get", "svc", "myapp-service", "-o", f"jsonpath={template}")[1] == (
        f"8080 {client_out}"
    )


def test_get_formats_delete_and_empty(knemu: Run, ns: str) -> None:
    code, _, err = knemu("get", "pods")
    assert (code, err) == (0, f"No resources found in {ns} namespace.\n")
    knemu("apply", "-f", str(EXAMPLES / "sample-clusterip.yaml"))
    assert knemu("get", "svc", "-o", "name")[1] == "service/sample-clusterip\n"
    _, out, _ = knemu("get", "svc", "sample-clusterip", "-o", "json")
    assert '"kind": "Service"' in out
    _, out, _ = knemu("get", "svc", "-o", "yaml")
    assert out.startswith("apiVersion: v1\nitems:\n")
    _, out, _ = knemu("get", "svc", "-A", namespace=False)
    assert any(line.split()[:2] == [ns, "sample-clusterip"] for line in out.splitlines())
    _, out, _ = knemu("get", "all")
    assert out.splitlines()[0].split()[0:2] == ["NAME", "TYPE"]
    assert "service/sample-clusterip" in out
    _, out, _ = knemu("get", "svc,ns", "-o", "name")
    assert "service/sample-clusterip" in out and f"namespace/{ns}" in out
    code, out, _ = knemu("get", "nodes", namespace=False)
    assert code == 0 and out.splitlines()[0].split() == [
        "NAME",
        "STATUS",
        "ROLES",
        "AGE",
        "VERSION",
    ]
    code, out, _ = knemu("delete", "-f", str(EXAMPLES / "sample-clusterip.yaml"))
    assert (code, out) == (0, 'service "sample-clusterip" deleted\n')
    code, _, err = knemu("delete", "pod", "ghost")
    assert (code, err) == (1, 'Error from server (NotFound): pods "ghost" not found\n')
    code, _, err = knemu("describe", "pod", "ghost")
    assert (code, err) == (1, 'Error from server (NotFound): pods "ghost" not found\n')


def test_run_creates_a_pod_like_kubectl(knemu: Run, cluster: Cluster, ns: str) -> None:
    code, out, _ = knemu(
        "run",
        "--image=amsy810/tools:v2.0",
        "--restart=Never",
        "-l",
        "tier=t",
        "testpod",
        "--command",
        "--",
        "curl",
        "-s",
        "http://10.97.91.208:8080",
    )
    assert (code, out) == (0, "pod/testpod created\n")
    pod = ApiClient(cluster.rest_url).get(resolve_kind("pods"), ns, "testpod")
    assert pod["metadata"]["labels"] == {"run": "testpod", "tier": "t"}
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["curl", "-s", "http://10.97.91.208:8080"]
    assert container["image"] == "amsy810/tools:v2.0" and pod["spec"]["restartPolicy"] == "Never"
    code, _, err = knemu("run", "--image=x", "--rm", "other")
    assert code == 1 and "--rm should only be used for attached containers" in err


@pytest.mark.usefixtures("myapp_service")
def test_seed_002_directory_applies_its_three_versions_in_order(knemu: Run) -> None:
    seed = EXAMPLES / "seed-002"
    code, out, err = knemu("apply", "-f", str(seed))
    assert (code, out) == (0, "service/myapp-service created\n"), err
    where = ", ".join(f"{f} document 1" for f in sorted(str(p) for p in seed.iterdir()))
    assert err == (
        f"service/myapp-service: named by {where}; applied in that order, as kubectl does: "
        "the last one wins\n"
    )
    # The last file, the NodePort version, wins; its ClusterIP is allocated, not the
    # LoadBalancer version's (which a later document no longer names).
    row = knemu("get", "svc", "myapp-service", "--no-headers")[1].split()
    assert row[1] == "NodePort" and row[4] == "80:30008/TCP", row
    assert row[2].startswith("10.") and row[2] != "10.0.171.239", row
    # Again, over the live Service: step 2 would move its ClusterIP, which is immutable
    # (kubectl fails that document too); all or nothing, so nothing changes.
    code, out, err = knemu("apply", "-f", str(seed))
    assert (code, out) == (1, "")
    lines = err.splitlines()
    lb = seed / "myapp-service-loadbalancer.yaml"
    assert lines[-2].startswith(f"error: {lb}: document 1 (Service/myapp-service): spec.clusterIP")
    assert "field is immutable" in lines[-2] and lines[-1] == "error: nothing was applied"
    assert knemu("get", "svc", "myapp-service", "--no-headers")[1].split()[:5] == row[:5]
    assert knemu("delete", "svc", "myapp-service")[0] == 0
    code, out, _ = knemu("apply", "-f", str(lb))
    assert (code, out) == (0, "service/myapp-service created\n")
    # EXTERNAL-IP is <pending> until a load-balancer address is assigned, then that address.
    jsonpath = "jsonpath={.status.loadBalancer.ingress[*].ip}"

    def consistent() -> bool:
        row = knemu("get", "svc", "myapp-service", "--no-headers")[1].split()
        ingress = knemu("get", "svc", "myapp-service", "-o", jsonpath)[1]
        return row[1:4] == ["LoadBalancer", "10.0.171.239", ingress or "<pending>"]

    wait_until(consistent, DEADLINE_S, what="EXTERNAL-IP to match status.loadBalancer")


def test_watch_prints_the_table_and_ends_with_the_request_timeout(knemu: Run) -> None:
    knemu("apply", "-f", str(EXAMPLES / "sample-clusterip.yaml"))
    started = time.monotonic()
    code, out, _ = knemu("get", "svc", "-w", "--request-timeout", "1")
    assert code == 0 and time.monotonic() - started < 10
    assert out.splitlines()[0].split()[0] == "NAME" and "sample-clusterip" in out


def test_exec_and_logs_report_an_unreachable_node_agent(knemu: Run) -> None:
    # FakeNodes have no kubelet API: the api-server's proxy cannot reach them.
    knemu("apply", "-f", str(EXAMPLES / "sample-named-port-pods.yaml"))
    _running_pods(knemu, 2)
    code, out, err = knemu("exec", "sample-named-port-pod-80", "--", "ls")
    assert (code, out) == (1, "")
    assert err.startswith("error: exec refused by the api-server (HTTP 5")
    code, _, err = knemu("logs", "sample-named-port-pod-80")
    assert code == 1 and err.startswith("Error from server (")
    code, _, err = knemu("exec", "sample-named-port-pod-80", "-c", "nope", "--", "ls")
    assert code == 1 and "container nope is not valid" in err


def test_namespace_and_its_objects_in_one_file(knemu: Run, tmp_path: Path) -> None:
    fresh = f"kt-{secrets.token_hex(3)}"
    manifest = tmp_path / "kt-ns.yaml"
    manifest.write_text(
        f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {fresh}}}\n---\n"
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: {fresh}}}\n"
        "spec: {ports: [{port: 80}], selector: {app: web}}\n"
    )
    code, out, err = knemu("apply", "-f", str(manifest), namespace=False)
    assert (code, err) == (0, "")
    assert out == f"namespace/{fresh} created\nservice/web created\n"
    assert knemu("get", "svc", "web", "-o", "name", "-n", fresh, namespace=False)[1] == (
        "service/web\n"
    )


def test_server_dry_run_and_delete_by_selector(knemu: Run) -> None:
    files = ["-f", str(EXAMPLES / "sample-named-port-pods.yaml")]
    code, out, _ = knemu("apply", "--dry-run", "server", *files)
    assert code == 0
    assert out.splitlines() == [
        "pod/sample-named-port-pod-80 created (server dry run)",
        "pod/sample-named-port-pod-81 created (server dry run)",
    ]
    assert knemu("get", "pods")[2].startswith("No resources found")
    knemu("apply", *files)
    code, out, _ = knemu("delete", "pods", "-l", "app=sample-app")
    assert code == 0
    assert sorted(out.splitlines()) == [
        'pod "sample-named-port-pod-80" deleted',
        'pod "sample-named-port-pod-81" deleted',
    ]
    code, _, err = knemu("delete", "pods")
    assert code == 1 and "no name was specified" in err
