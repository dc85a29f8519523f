"""Cluster DNS seen from inside pods on a real 3-node local cluster (`knemu up`).

Seed 003's sample-deployment and sample-clusterip are applied; a tools pod (amsy810/tools:v2.0)
runs curl, dig and nslookup against kube-dns 10.96.0.10, as in the seed.  Only names under
cluster.local and the cluster's own reverse names are ever queried: the cluster has no
upstream resolver (anything else is REFUSED), and no query leaves the cluster's namespaces.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator

import pytest
from localcluster import FROM, LocalCluster, local_cluster, wait_backends

from knemu.testing import wait_until

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(600)]

SVC = "sample-clusterip"
FQDN = f"{SVC}.default.svc.cluster.local"
CLIENT = "dns-tools"
STATUS = re.compile(r"status: ([A-Z]+)")


def tools_manifest(name: str, dns: str = "") -> str:
    """A tools pod (the seed's image) that sleeps; ``dns`` is extra spec YAML (2-space indent)."""
    return f"""apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    role: dns-tools
spec:
{dns}  containers:
  - name: tools
    image: amsy810/tools:v2.0
    command: ["sleep", "3600"]
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("knemu-state")) as c:
        c.apply_file("examples/sample-deployment.yaml")
        c.apply_file("examples/sample-clusterip.yaml")
        c.apply(tools_manifest(CLIENT))
        c.wait_ready(3, selector="app=sample-app")
        c.wait_ready(1, selector="role=dns-tools")
        wait_backends(c, f"default/{SVC}", 3)
        yield c


def run_in(c: LocalCluster, pod: str, script: str) -> str:
    out = c.exec(pod, script)
    assert out.returncode == 0, f"{script!r} in {pod} -> {out.returncode}\n{out.stdout}{out.stderr}"
    return out.stdout


def cluster_ip(c: LocalCluster, name: str = SVC) -> str:
    return str(c.service(name)["spec"]["clusterIP"])


def ready_ips(c: LocalCluster) -> set[str]:
    return {p["status"]["podIP"] for p in c.wait_ready(3, selector="app=sample-app")}


def test_curl_by_short_and_full_service_name_answers_with_the_echo_line(
    cluster: LocalCluster,
) -> None:
    replicas = {p["metadata"]["name"] for p in cluster.pods(selector="app=sample-app")}
    for name in (SVC, FQDN):
        out = run_in(cluster, CLIENT, f"curl -s -m 5 http://{name}:8080")
        # Host=<name>  Path=/  From=<pod>  ClientIP=<client>  XFF=
        assert out.startswith(f"Host={name}  Path=/  From="), out
        match = FROM.search(out)
        assert match is not None and match.group(1) in replicas, out


def test_dig_search_short_name_gives_the_cluster_ip(cluster: LocalCluster) -> None:
    out = run_in(cluster, CLIENT, f"dig +search +short +time=3 +tries=1 {SVC}")
    assert out.split() == [cluster_ip(cluster)], out


def test_nslookup_short_name(cluster: LocalCluster) -> None:
    out = run_in(cluster, CLIENT, f"nslookup {SVC}")
    assert "Server:\t\t10.96.0.10" in out, out
    # The first search domain completes the name (ndots:5).
    assert re.search(rf"Name:\s+{re.escape(FQDN)}\nAddress: {re.escape(cluster_ip(cluster))}\n",
                     out), out  # fmt: skip


def test_srv_record_of_the_named_port(cluster: LocalCluster) -> None:
    name = f"_http-port._tcp.{FQDN}"
    assert run_in(cluster, CLIENT, f"dig +short SRV {name}").split() == [
        "0", "100", "8080", f"{FQDN}.",
    ]  # fmt: skip
    full = run_in(cluster, CLIENT, f"dig SRV {name}")
    # CoreDNS style: authoritative, the target's A record in the additional section.
    assert "status: NOERROR" in full and re.search(r"flags: qr aa", full), full
    assert re.search(rf"{re.escape(name)}\.\s+\d+\s+IN\s+SRV\s+0 100 8080 {re.escape(FQDN)}\.",
                     full), full  # fmt: skip
    assert re.search(rf"{re.escape(FQDN)}\.\s+\d+\s+IN\s+A\s+{re.escape(cluster_ip(cluster))}",
                     full), full  # fmt: skip


def test_ptr_of_the_cluster_ip(cluster: LocalCluster) -> None:
    ip = cluster_ip(cluster)
    assert run_in(cluster, CLIENT, f"dig +short -x {ip}").split() == [f"{FQDN}."]
    full = run_in(cluster, CLIENT, f"dig -x {ip}")
    reverse = ".".join(reversed(ip.split("."))) + ".in-addr.arpa."
    assert "status: NOERROR" in full, full
    assert re.search(rf"{re.escape(reverse)}\s+\d+\s+IN\s+PTR\s+{re.escape(FQDN)}\.", full), full


HEADLESS = """apiVersion: v1
kind: Service
metadata:
  name: sample-headless
spec:
  clusterIP: None
  ports:
  - name: http-port
    protocol: TCP
    port: 80
    targetPort: 80
  selector:
    app: sample-app
"""


def test_headless_service_gives_one_a_record_per_ready_pod(cluster: LocalCluster) -> None:
    cluster.apply(HEADLESS)
    try:
        assert cluster.service("sample-headless")["spec"]["clusterIP"] == "None"
        want = sorted(ready_ips(cluster))
        got: list[str] = []

        def answered() -> bool:
            nonlocal got
            out = cluster.exec(CLIENT, "dig +short sample-headless.default.svc.cluster.local")
            got = sorted(out.stdout.split())
            return got == want

        wait_until(answered, 10, what=f"one A per ready pod {want}", interval_s=0.2)
        # Each pod answers on its own address: the records are usable as they are.
        for ip in got:
            out = run_in(cluster, CLIENT, f"curl -s -m 5 http://{ip}/")
            assert FROM.search(out), out
    finally:
        cluster.knemu("delete", "service", "sample-headless", check=False)


def pod_ready(cluster: LocalCluster, name: str) -> bool:
    status = cluster.get(f"/api/v1/namespaces/default/pods/{name}").get("status", {})
    conds = {c["type"]: c["status"] for c in status.get("conditions", [])}
    return conds.get("Ready") == "True"


def resolv_conf_of(cluster: LocalCluster, name: str, dns: str) -> str:
    cluster.apply(tools_manifest(name, dns))
    try:
        wait_until(lambda: pod_ready(cluster, name), 60, what=f"pod {name} Ready", interval_s=0.2)
        return run_in(cluster, name, "cat /etc/resolv.conf")
    finally:
        cluster.knemu("delete", "pod", name, check=False)


def test_resolv_conf_cluster_first(cluster: LocalCluster) -> None:
    assert run_in(cluster, CLIENT, "cat /etc/resolv.conf").splitlines() == [
        "nameserver 10.96.0.10",
        "search default.svc.cluster.local svc.cluster.local cluster.local",
        "options ndots:5",
    ]


DNS_NONE = """  dnsPolicy: "None"
  dnsConfig:
    nameservers: ["10.96.0.10"]
    searches: ["custom.example", "default.svc.cluster.local"]
    options:
    - name: ndots
      value: "2"
    - name: edns0
"""


def test_resolv_conf_dns_policy_none_is_exactly_the_dns_config(cluster: LocalCluster) -> None:
    assert resolv_conf_of(cluster, "dns-none", DNS_NONE).splitlines() == [
        "nameserver 10.96.0.10",
        "search custom.example default.svc.cluster.local",
        "options ndots:2 edns0",
    ]


def test_resolv_conf_dns_policy_default_is_the_nodes(cluster: LocalCluster) -> None:
    got = resolv_conf_of(cluster, "dns-default", "  dnsPolicy: Default\n")
    # The node's resolv.conf as the agent sees it (its namespace's /etc/resolv.conf).
    node = subprocess.run(["ip", "netns", "exec", cluster.node_ns(1), "cat", "/etc/resolv.conf"],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip

    def directives(text: str) -> list[str]:
        keep = ("nameserver", "search", "domain", "options")
        return [" ".join(line.split()) for line in text.splitlines()
                if line.split() and line.split()[0] in keep]  # fmt: skip

    assert directives(got) == directives(node), (got, node)
    assert "10.96.0.10" not in got and "cluster.local" not in got


FRESH = """apiVersion: v1
kind: Service
metadata:
  name: fresh-svc
spec:
  ports:
  - name: http
    protocol: TCP
    port: 9090
    targetPort: 80
  selector:
    app: sample-app
"""


def wait_in_pod(cluster: LocalCluster, script_ok: str, what: str, deadline_s: float) -> float:
    """Run ``script_ok`` (a shell test) in the client pod every 50 ms until it holds or
    ``deadline_s`` passes; the seconds it took, measured inside the pod."""
    loop = (
        f"start=$(date +%s%N); end=$(( start + {int(deadline_s * 1e9)} )); "
        f"while [ $(date +%s%N) -le $end ]; do if {script_ok}; then "
        'echo "took_ms $(( ($(date +%s%N) - start) / 1000000 ))"; exit 0; fi; sleep 0.05; done; '
        "exit 1"
    )
    out = cluster.exec(CLIENT, loop, timeout_s=deadline_s + 30)
    assert out.returncode == 0, f"{what} not seen within {deadline_s} s: {out.stdout}{out.stderr}"
    return int(out.stdout.split("took_ms")[-1]) / 1000


def test_new_service_resolves_at_once_and_is_nxdomain_once_deleted(cluster: LocalCluster) -> None:
    name = "fresh-svc.default.svc.cluster.local"
    status = f"dig +time=1 +tries=1 {name} | grep -o 'status: [A-Z]*'"
    assert run_in(cluster, CLIENT, status).split() == ["status:", "NXDOMAIN"]
    created = time.monotonic()
    cluster.apply(FRESH)
    try:
        ip = cluster_ip(cluster, "fresh-svc")
        took = wait_in_pod(cluster, f'[ "$(dig +short +time=1 +tries=1 {name})" = "{ip}" ]',
                           f"{name} -> {ip}", 5)  # fmt: skip
        resolved_s = time.monotonic() - created
        # Short name too, through the pod's search path.
        out = run_in(cluster, CLIENT, "dig +search +short fresh-svc")
        assert out.split() == [ip], out
    finally:
        cluster.knemu("delete", "service", "fresh-svc")
    deleted = time.monotonic()
    gone = wait_in_pod(cluster, f'[ "$({status})" = "status: NXDOMAIN" ]', f"{name} NXDOMAIN", 5)
    gone_s = time.monotonic() - deleted
    full = run_in(cluster, CLIENT, f"dig {name}")
    assert STATUS.search(full).group(1) == "NXDOMAIN"  # type: ignore[union-attr]
    # RFC 2308: the negative answer carries the zone's SOA.
    assert re.search(r"cluster\.local\.\s+\d+\s+IN\s+SOA\s", full), full
    print(f"\nfresh-svc resolvable {took:.2f} s after `knemu apply` returned "
          f"({resolved_s:.2f} s from apply start); NXDOMAIN {gone:.2f} s after "
          f"`knemu delete` returned ({gone_s:.2f} s from delete start)")  # fmt: skip
