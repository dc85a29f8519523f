"""Sans-I/O parts of the pod runtime: IPAM, resolv.conf, image plans, state machines, HTTP."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from knemu.errors import ConfigError, Exhausted
from knemu.node_agent.cni import ipam, resolv
from knemu.node_agent.runtime import containers, probes, sandbox, workloads
from knemu.node_agent.runtime.containers import ContainerCore, ContainerStatus
from knemu.node_agent.runtime.pods import PodStatus, pod_phase
from knemu.proto import knemu_pb2 as pb

# ---- IPAM ---------------------------------------------------------------------------------


def test_ipam_skips_network_gateway_broadcast_and_takes_lowest_free() -> None:
    a = ipam.HostLocalIpam("10.244.2.0/24", "10.244.2.1")
    assert a.capacity == 253
    assert a.allocate("default/a", "u1") == "10.244.2.2"
    assert a.allocate("default/b", "u2") == "10.244.2.3"
    assert a.allocate("default/a", "u1") == "10.244.2.2"  # same uid: same address
    assert a.release("u1") == "10.244.2.2"
    assert a.allocate("default/c", "u3") == "10.244.2.2"  # lowest free again
    assert a.release("nope") is None


def test_ipam_gateway_elsewhere_in_range_is_skipped() -> None:
    a = ipam.HostLocalIpam("10.0.0.0/29", "10.0.0.2")
    got = [a.allocate(f"ns/p{i}", f"u{i}") for i in range(5)]
    assert got == ["10.0.0.1", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]


def test_ipam_exhaustion_names_cidr_pod_and_count() -> None:
    a = ipam.HostLocalIpam("10.244.2.0/30", "10.244.2.1")
    assert a.allocate("default/first", "u1") == "10.244.2.2"
    with pytest.raises(Exhausted) as info:
        a.allocate("default/x", "u2")
    msg = info.value.message
    assert "no free IP in podCIDR 10.244.2.0/30 for pod default/x" in msg
    assert "1 addresses in use" in msg and "delete pods" in msg


def test_ipam_full_24_then_exhausted() -> None:
    a = ipam.HostLocalIpam("10.244.3.0/24", "10.244.3.1")
    ips = {a.allocate(f"ns/p{i}", f"u{i}") for i in range(253)}
    assert len(ips) == 253 and "10.244.3.255" not in ips and "10.244.3.1" not in ips
    with pytest.raises(Exhausted, match="253 addresses in use"):
        a.allocate("ns/extra", "extra")


def test_ipam_persists_and_restores(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    a = ipam.load(path, "10.244.2.0/24", "10.244.2.1")
    a.allocate("default/a", "u1")
    a.allocate("default/b", "u2")
    ipam.save(a, path)
    b = ipam.load(path, "10.244.2.0/24", "10.244.2.1")
    assert b.lookup("u2") == "10.244.2.3"
    assert b.allocate("default/c", "u3") == "10.244.2.4"
    assert [x.uid for x in b.retain({"u1"})] == ["u2", "u3"]
    other = ipam.load(path, "10.244.9.0/24", "10.244.9.1")  # another podCIDR: start empty
    assert other.allocations() == []


def test_ipam_restore_ignores_garbage(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    path.write_text(
        json.dumps(
            {
                "podCIDR": "10.244.2.0/24",
                "allocations": [
                    {"ip": "10.244.2.1", "pod": "a/gw", "uid": "g"},  # gateway: refused
                    {"ip": "10.9.9.9", "pod": "a/out", "uid": "o"},  # outside: refused
                    {"ip": "bogus", "pod": "a/b", "uid": "b"},
                    {"pod": "a/noip"},
                    {"ip": "10.244.2.7", "pod": "a/ok", "uid": "ok"},
                ],
            }
        )
    )
    a = ipam.load(path, "10.244.2.0/24", "10.244.2.1")
    assert [(x.ip, x.uid) for x in a.allocations()] == [("10.244.2.7", "ok")]
    (tmp_path / "bad.json").write_text("{not json")
    assert ipam.load(tmp_path / "bad.json", "10.244.2.0/24", "10.244.2.1").allocations() == []


def test_ipam_rejects_gateway_outside_cidr() -> None:
    with pytest.raises(ConfigError, match="outside podCIDR"):
        ipam.HostLocalIpam("10.244.2.0/24", "10.244.3.1")


# ---- resolv.conf / hosts --------------------------------------------------------------------

NODE = resolv.parse_resolv_conf(
    "# x\nnameserver 192.168.59.1\nsearch corp.example\noptions edns0\n"
)


NO_CONFIG = resolv.DnsConfig()


def conf(policy: str, cfg: resolv.DnsConfig = NO_CONFIG, host: bool = False) -> str:
    return resolv.pod_resolv_conf(
        namespace="team", dns_policy=policy, dns_config=cfg, host_network=host, node_resolv=NODE
    ).render()


def test_resolv_cluster_first() -> None:
    assert conf("ClusterFirst") == (
        "nameserver 10.96.0.10\n"
        "search team.svc.cluster.local svc.cluster.local cluster.local\n"
        "options ndots:5\n"
    )
    assert conf("") == conf("ClusterFirst") == conf("ClusterFirstWithHostNet")


def test_resolv_default_and_hostnetwork() -> None:
    expected = "nameserver 192.168.59.1\nsearch corp.example\noptions edns0\n"
    assert conf("Default") == expected
    assert conf("ClusterFirst", host=True) == expected
    assert conf("ClusterFirstWithHostNet", host=True).startswith("nameserver 10.96.0.10\n")


def test_resolv_none_and_merge() -> None:
    cfg = resolv.DnsConfig(
        ("1.2.3.4", "10.96.0.10"), ("my.dns.search", "team.svc.cluster.local"),
        (("ndots", "2"), ("edns0", "")),
    )  # fmt: skip
    assert conf("None", cfg) == (
        "nameserver 1.2.3.4\nnameserver 10.96.0.10\n"
        "search my.dns.search team.svc.cluster.local\noptions ndots:2 edns0\n"
    )
    assert conf("ClusterFirst", cfg) == (
        "nameserver 10.96.0.10\nnameserver 1.2.3.4\n"
        "search team.svc.cluster.local svc.cluster.local cluster.local my.dns.search\n"
        "options ndots:2 edns0\n"
    )


def test_resolv_limits_and_bad_policy() -> None:
    cfg = resolv.DnsConfig(
        tuple(f"10.0.0.{i}" for i in range(5)), tuple(f"d{i}" for i in range(40))
    )
    out = resolv.pod_resolv_conf(namespace="n", dns_policy="None", dns_config=cfg)
    assert len(out.nameservers) == 3 and len(out.searches) == 32
    with pytest.raises(ValueError, match="dnsPolicy 'Bogus'"):
        conf("Bogus")


def test_hosts_file() -> None:
    text = resolv.pod_hosts_file(
        pod_ip="10.244.1.5", hostname="web-0", subdomain="web", namespace="default",
        cluster_domain="cluster.local",
    )  # fmt: skip
    assert "127.0.0.1\tlocalhost\n" in text
    assert text.endswith("10.244.1.5\tweb-0.web.default.svc.cluster.local\tweb-0\n")


# ---- names ----------------------------------------------------------------------------------


def test_names() -> None:
    uid = "d7a3b86c-f06e-4038-a444-ed4a86662133"
    assert sandbox.netns_name("knemu", "node-2", uid) == "knemu-node-2-d7a3b86c"
    name = sandbox.tun_name_for(uid)
    assert name.startswith("kn") and len(name) <= 15
    assert sandbox.pod_hostname("x" * 80) == "x" * 63
    assert sandbox.pod_hostname("pod", "custom") == "custom"


# ---- image plans ----------------------------------------------------------------------------


def ctr(image: str, **kw: object) -> pb.Container:
    return pb.Container(name="c", image=image, **kw)  # type: ignore[arg-type]


def test_plan_builtin_images() -> None:
    env = {"PATH": "/bin"}
    nginx = workloads.plan_container(ctr("nginx:1.16"), "web", env)
    assert nginx.builtin == "nginx" and nginx.argv[-4:] == ("--pod", "web", "--port", "80")
    ports = [pb.ContainerPort(container_port=81), pb.ContainerPort(container_port=80)]
    echo = workloads.plan_container(ctr("amsy810/echo-nginx:v2.0", ports=ports), "p", env)
    assert echo.builtin == "echo" and echo.argv[-4:] == ("--port", "80", "--port", "81")
    echo81 = workloads.plan_container(
        ctr("amsy810/echo-nginx:v2.0", ports=ports), "p", {"NGINX_PORT": "81"}
    )
    assert echo81.argv[-2:] == ("--port", "81")
    assert workloads.plan_container(ctr("docker.io/knemu/echo@sha256:ab"), "p", env).builtin


def test_knemu_modules_run_with_the_nodes_interpreter() -> None:
    spec = ctr("knemu/ingress-controller", command=["python", "-m", "knemu.ingress"],
               args=["--publish-service", "ingress/knemu-ingress"])  # fmt: skip
    plan = workloads.plan_container(spec, "p", {})
    assert plan.builtin == "knemu"
    assert plan.argv == (sys.executable, "-m", "knemu.ingress", "--publish-service",
                         "ingress/knemu-ingress")  # fmt: skip
    other = workloads.plan_container(ctr("x", command=["python3", "-m", "http.server"]), "p", {})
    assert other.builtin == "" and other.argv[0] == "python3"


def test_plan_tools_commands_and_unknown() -> None:
    env = {"X": "1"}
    assert workloads.plan_container(ctr("amsy810/tools:v2.0"), "p", env).argv == (
        "sleep",
        "infinity",
    )
    assert workloads.plan_container(ctr("busybox", args=["echo", "$(X)"]), "p", env).argv == (
        "echo",
        "1",
    )
    cmd = ctr("anything:1", command=["sh", "-c"], args=["echo $(X) $$(X) $(Y)"])
    assert workloads.plan_container(cmd, "p", env).argv == ("sh", "-c", "echo 1 $(X) $(Y)")
    bad = workloads.plan_container(ctr("mysql:8"), "p", env)
    assert bad.argv == () and "knemu cannot emulate image 'mysql:8'" in bad.error
    assert "give the container a command" in bad.error


def test_image_repository() -> None:
    assert workloads.image_repository("localhost:5000/a/Nginx:1.2") == "localhost:5000/a/nginx"
    assert workloads.image_repository("nginx@sha256:00") == "nginx"


def test_container_env_expands_in_order() -> None:
    c = pb.Container(
        name="c", env=[pb.EnvVar(name="A", value="x"), pb.EnvVar(name="B", value="$(A)-y")]
    )
    env = containers.container_env(c, "host")
    assert env["B"] == "x-y" and env["HOSTNAME"] == "host" and "/usr/bin" in env["PATH"]


# ---- container state machine ----------------------------------------------------------------


def test_backoff_sequence_and_restart_counts() -> None:
    core = ContainerCore("c", "Always", backoff_initial_s=10, backoff_max_s=40)
    delays = []
    now = 0.0
    for _ in range(5):
        core.on_started(now, 1.0)
        delays.append(core.on_exited(1, now + 1))
        core.on_restarting()
        now += 2
    assert delays == [0.0, 10, 20, 40, 40]
    assert core.restart_count == 5
    core.on_started(now, 1.0)
    assert core.on_exited(1, now + 700) == 0.0  # ran 10+ minutes: back-off reset


def test_exit_reasons_and_policies() -> None:
    core = ContainerCore("c", "Never")
    core.on_started(0, 1)
    assert core.on_exited(-9, 1) is None
    assert (core.state, core.reason, core.exit_code) == ("terminated", "Error", 137)
    core = ContainerCore("c", "OnFailure", backoff_initial_s=5)
    core.on_started(0, 1)
    assert core.on_exited(0, 1) is None and core.reason == "Completed"
    core = ContainerCore("c", "OnFailure", backoff_initial_s=5)
    core.on_started(0, 1)
    assert core.on_exited(2, 1) == 0.0
    core.on_started(2, 1)
    assert core.on_exited(2, 3) == 5 and core.reason == "CrashLoopBackOff"
    assert "back-off 5s restarting failed container=c" in core.message


# ---- pod phase ------------------------------------------------------------------------------


def cs(state: str, code: int = 0, restarts: int = 0, reason: str = "") -> ContainerStatus:
    return ContainerStatus("c", state=state, exit_code=code, restart_count=restarts, reason=reason)


@pytest.mark.parametrize(
    ("statuses", "policy", "phase"),
    [
        ([cs("waiting", reason="ContainerCreating")], "Always", "Pending"),
        ([cs("waiting", reason="ErrImagePull"), cs("running")], "Always", "Pending"),
        ([cs("running")], "Never", "Running"),
        ([cs("running"), cs("terminated", 1)], "Never", "Running"),
        ([cs("terminated", 0)], "Never", "Succeeded"),
        ([cs("terminated", 0)], "OnFailure", "Succeeded"),
        ([cs("terminated", 1)], "Never", "Failed"),
        ([cs("terminated", 1)], "OnFailure", "Running"),
        ([cs("terminated", 0)], "Always", "Running"),
        ([cs("waiting", 1, 3, "CrashLoopBackOff")], "Always", "Running"),
        ([], "Always", "Pending"),
    ],
)
def test_pod_phase(statuses: list[ContainerStatus], policy: str, phase: str) -> None:
    assert pod_phase(statuses, policy) == phase


def test_status_report_fields() -> None:
    st_ = PodStatus("ns", "p", "u", "node-1", "Running", "10.244.1.2", True, (cs("running"),))
    rep = st_.to_report()
    assert (rep.namespace, rep.name, rep.phase, rep.pod_ip, rep.ready) == (
        "ns", "p", "Running", "10.244.1.2", True,
    )  # fmt: skip
    assert rep.container_statuses[0].state == "running"


# ---- probes ---------------------------------------------------------------------------------


def test_probe_defaults_and_thresholds() -> None:
    spec = probes.ProbeSpec.from_pb(pb.Probe(tcp_socket=pb.TCPSocketAction(port="80")))
    assert (spec.period_s, spec.timeout_s, spec.failure_threshold) == (10, 1, 3)
    spec = probes.ProbeSpec(
        "http_get", "80", period_s=1, initial_delay_s=5, success_threshold=2, failure_threshold=2
    )
    t = probes.ProbeTracker(spec, started=100.0, initial=False)
    assert t.next_due() == 105.0
    assert not t.record(True, 105) and t.next_due() == 106
    assert t.record(True, 106) and t.result
    assert not t.record(False, 107)
    assert not t.record(True, 108)  # resets the failure run
    assert not t.record(False, 109)
    assert t.record(False, 110) and not t.result
    with pytest.raises(ValueError, match="no httpGet"):
        probes.ProbeSpec.from_pb(pb.Probe())


def test_probe_named_port() -> None:
    c = pb.Container(name="c", ports=[pb.ContainerPort(name="http", container_port=81)])
    assert probes.resolve_port("http", c) == 81 and probes.resolve_port("90", c) == 90
    with pytest.raises(ValueError, match="not a number nor a named port"):
        probes.resolve_port("web", c)


# ---- HTTP core of the workloads ----------------------------------------------------------


def test_echo_line_exact() -> None:
    req = workloads.parse_head(
        b"GET /a/b?c=1 HTTP/1.1\r\nHost: 10.97.91.208:8080\r\nX-Forwarded-For: 1.1.1.1"
    )
    assert workloads.echo_line(req, "pod-x", "10.244.1.9", "10.244.1.2") == (
        "Host=10.97.91.208  Path=/a/b?c=1  From=pod-x  ClientIP=10.244.1.9  XFF=1.1.1.1\n"
    )
    assert req.keep_alive
    assert not workloads.parse_head(b"GET / HTTP/1.0").keep_alive

    def answer(mode: str, head: bytes) -> tuple[int, str, str]:
        return workloads.respond(mode, workloads.parse_head(head), "p", "", "")

    assert answer("nginx", b"GET /index.html HTTP/1.1")[2].startswith("<!DOCTYPE html>")
    assert answer("nginx", b"GET /zz HTTP/1.1")[0] == 404
    assert answer("echo", b"GET /zz HTTP/1.1")[0] == 200


@given(st.binary(max_size=300))
def test_parse_head_never_crashes(data: bytes) -> None:
    try:
        workloads.parse_head(data)
    except workloads.BadRequest:
        pass


def test_run_netns_mount_tags() -> None:
    info = (
        "27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        "43 27 254:0 /run/netns /run/netns rw,relatime shared:9 master:2 - ext4 /dev/vda rw\n"
        "232 43 0:4 net:[1] /run/netns/x rw shared:32 - nsfs nsfs rw\n"
    )
    assert sandbox._run_netns_tags(info) == {"shared": "9", "master": "2"}
    assert sandbox._run_netns_tags(info.splitlines()[0]) is None


def test_access_log_line_is_nginx_combined_format() -> None:
    from knemu.node_agent.runtime.workloads import Request, access_log_line

    req = Request("GET", "/x?y=1", "HTTP/1.1", {"user-agent": "curl/7.88.1"})
    line = access_log_line(req, "10.244.1.3", 200, 42)
    assert line.startswith("10.244.1.3 - - [")
    assert line.endswith('] "GET /x?y=1 HTTP/1.1" 200 42 "-" "curl/7.88.1"')


def test_package_root_is_where_the_knemu_package_is() -> None:
    """The built-in workloads run ``python -S -m knemu...`` with this on PYTHONPATH."""
    root = Path(workloads.package_root())
    assert (root / "knemu" / "node_agent" / "runtime" / "workloads.py").is_file()
