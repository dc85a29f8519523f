"""The pod runtime for real: namespaces, TUN, processes, probes, exec, logs, teardown."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import select
import struct
import sys
from pathlib import Path

import pytest

from knemu.errors import Exhausted, LocalError, NotFound, PodRuntimeError
from knemu.node_agent.runtime import sandbox
from knemu.node_agent.runtime.pods import PodRuntime
from knemu.proto import knemu_pb2 as pb
from knemu.testing import wait_for

from .pods_helpers import Harness, alive, run

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

TOOLS = pb.Container(name="tools", image="amsy810/tools:v2.0")


def running(s: object) -> bool:
    return getattr(s, "phase", "") == "Running"


async def test_sandbox_netns_hostname_tun_eth0(harness: Harness) -> None:
    h = await harness.rt.start_pod(harness.pod("sandbox-pod", TOOLS))
    await harness.wait_status(h.key, running)
    assert h.netns in run("ip", "netns", "list")
    assert h.netns == f"{harness.prefix}-{harness.node}-{h.uid.replace('-', '')[:8]}"
    assert ipaddress.ip_address(h.ip) in ipaddress.ip_network("10.244.77.0/24")
    assert h.ip != "10.244.77.1"
    code, out, _ = await harness.sh(h.key, "hostname; cat /sys/class/net/eth0/tun_flags")
    assert code == 0
    hostname, flags = out.split()
    assert hostname == "sandbox-pod"
    assert int(flags, 16) & 0x1001 == 0x1001  # IFF_TUN | IFF_NO_PI
    link = run("ip", "-n", h.netns, "-o", "link", "show", "eth0")
    assert "mtu 1450" in link and "POINTOPOINT" in link and "UP" in link
    assert f"inet {h.ip}/32" in run("ip", "-n", h.netns, "-4", "-o", "addr", "show", "eth0")
    assert run("ip", "-n", h.netns, "route").startswith("default dev eth0")
    assert "lo" in run("ip", "-n", h.netns, "-o", "link", "show", "up")
    assert os.get_blocking(h.tun_fd) is False


@pytest.mark.parametrize(
    ("policy", "dns_config", "expected"),
    [
        (
            "ClusterFirst",
            None,
            "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local "
            "cluster.local\noptions ndots:5\n",
        ),
        (
            "None",
            pb.PodDNSConfig(
                nameservers=["10.244.77.53"],
                searches=["a.example"],
                options=[pb.DNSConfigOption(name="ndots", value="2")],
            ),
            "nameserver 10.244.77.53\nsearch a.example\noptions ndots:2\n",
        ),
        ("Default", None, None),
    ],
)
async def test_resolv_conf_per_dns_policy(
    harness: Harness, policy: str, dns_config: pb.PodDNSConfig | None, expected: str | None
) -> None:
    kw: dict[str, object] = {"dns_policy": policy}
    if dns_config is not None:
        kw["dns_config"] = dns_config
    h = await harness.rt.start_pod(harness.pod("dns-pod", TOOLS, **kw))
    await harness.wait_status(h.key, running)
    code, out, _ = await harness.sh(h.key, "cat /etc/resolv.conf; echo ===; cat /etc/hosts")
    assert code == 0
    resolv_text, hosts = out.split("===\n")
    if expected is None:  # Default: the node's nameservers
        node = Path("/etc/resolv.conf").read_text()
        for line in resolv_text.splitlines():
            if line.startswith("nameserver"):
                assert line in node
    else:
        assert resolv_text == expected
    assert f"{h.ip}\tdns-pod" in hosts


async def test_tun_fd_receives_packets_the_pod_sends(harness: Harness) -> None:
    h = await harness.rt.start_pod(harness.pod("sender", TOOLS))
    await harness.wait_status(h.key, running)
    script = (
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        "s.sendto(b'knemu-probe', ('10.244.77.99', 9999))"
    )
    # the node's python3, not this venv's interpreter: the pod has its own /tmp (a clone's place)
    proc = await harness.rt.exec(h.key, "tools", ["python3", "-c", script], stdin=False)
    assert await asyncio.wait_for(proc.wait(), 20) == 0
    packet = await wait_for(lambda: _read_ipv4(h.tun_fd), 10, what="a packet on the TUN fd")
    ihl = (packet[0] & 0x0F) * 4
    assert packet[0] >> 4 == 4 and packet[9] == 17  # IPv4, UDP
    assert packet[12:16] == ipaddress.IPv4Address(h.ip).packed
    assert packet[16:20] == ipaddress.IPv4Address("10.244.77.99").packed
    assert struct.unpack("!H", packet[ihl + 2 : ihl + 4])[0] == 9999
    assert packet[ihl + 8 :] == b"knemu-probe"


def _read_ipv4(fd: int) -> bytes | None:
    while select.select([fd], [], [], 0)[0]:
        data = os.read(fd, 65535)
        if data and data[0] >> 4 == 4:
            return data
    return None


async def test_echo_workload_answers_exact_line(harness: Harness) -> None:
    echo = pb.Container(
        name="echo", image="amsy810/echo-nginx:v2.0",
        env=[pb.EnvVar(name="NGINX_PORT", value="81")],
        ports=[pb.ContainerPort(name="http", container_port=81)],
        has_readiness_probe=True,
        readiness_probe=pb.Probe(tcp_socket=pb.TCPSocketAction(port="http"), period_s=1),
    )  # fmt: skip
    h = await harness.rt.start_pod(harness.pod("echo-pod", echo))
    await harness.wait_status(h.key, lambda s: s.ready)
    url = f"http://{h.ip}:81/sample?x=1"
    out = run("ip", "netns", "exec", h.netns, "curl", "-s", "-H", "X-Forwarded-For: 1.2.3.4", url)
    assert out == f"Host={h.ip}  Path=/sample?x=1  From=echo-pod  ClientIP={h.ip}  XFF=1.2.3.4\n"
    udp = (
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5); "
        f"s.sendto(b'x', ('{h.ip}', 81)); print(s.recvfrom(100)[0].decode(), end='')"
    )
    assert run("ip", "netns", "exec", h.netns, sys.executable, "-c", udp) == (
        f"From=echo-pod ClientIP={h.ip}\n"
    )


async def test_nginx_image_with_http_readiness_probe(harness: Harness) -> None:
    nginx = pb.Container(
        name="nginx", image="nginx:1.16", has_readiness_probe=True,
        readiness_probe=pb.Probe(
            http_get=pb.HTTPGetAction(path="/index.html", port="80"), period_s=1
        ),
    )  # fmt: skip
    h = await harness.rt.start_pod(harness.pod("web", nginx))
    first = await harness.wait_status(h.key, running)
    assert not first.ready or first.container_statuses[0].ready
    ready = await harness.wait_status(h.key, lambda s: s.ready)
    assert ready.container_statuses[0].ready
    assert any(s.phase == "Running" and not s.ready for s in harness.statuses)
    page = run("ip", "netns", "exec", h.netns, "curl", "-s", f"http://{h.ip}/index.html")
    assert "Welcome to nginx!" in page
    root = run("ip", "netns", "exec", h.netns, "curl", "-s", f"http://{h.ip}/")
    assert root.startswith(f"Host={h.ip}  Path=/  From=web  ")


async def test_failing_liveness_probe_restarts_container(harness: Harness) -> None:
    c = pb.Container(
        name="c", image="busybox", has_liveness_probe=True,
        liveness_probe=pb.Probe(
            exec=pb.ExecAction(command=["sh", "-c", "exit 1"]), period_s=1, failure_threshold=1
        ),
    )  # fmt: skip
    h = await harness.rt.start_pod(harness.pod("live", c))
    await harness.wait_status(h.key, lambda s: s.container_statuses[0].restart_count >= 1)
    reasons = {e[2] for e in harness.events if e[0] == h.key}
    assert {"Unhealthy", "Killing"} <= reasons


async def test_unknown_image_waits_with_reason_and_event(harness: Harness) -> None:
    c = pb.Container(name="db", image="mysql:8.0")
    h = await harness.rt.start_pod(harness.pod("db", c))
    s = await harness.wait_status(h.key, lambda s: s.container_statuses[0].reason == "ErrImagePull")
    assert s.phase == "Pending" and not s.ready
    assert s.container_statuses[0].state == "waiting"
    assert "knemu cannot emulate image 'mysql:8.0'" in s.container_statuses[0].message
    assert any(e[:3] == (h.key, "Warning", "Failed") and "mysql" in e[3] for e in harness.events)
    with pytest.raises(LocalError, match="waiting"):
        await harness.rt.exec(h.key, "db", ["true"], stdin=False)


def crash(code: int) -> pb.Container:
    return pb.Container(name="c", image="busybox", command=["sh", "-c", f"exit {code}"])


async def test_restart_policy_on_failure_counts_and_backs_off(harness: Harness) -> None:
    h = await harness.rt.start_pod(harness.pod("crashy", crash(3), restart_policy="OnFailure"))
    s = await harness.wait_status(h.key, lambda s: s.container_statuses[0].restart_count >= 3)
    assert s.phase == "Running"
    assert any(
        x.container_statuses and x.container_statuses[0].reason == "CrashLoopBackOff"
        for x in harness.statuses
    )
    assert any(e[2] == "BackOff" for e in harness.events)


async def test_restart_policy_never_and_completion(harness: Harness) -> None:
    failed = await harness.rt.start_pod(harness.pod("fails", crash(3), restart_policy="Never"))
    done = await harness.rt.start_pod(harness.pod("done", crash(0), restart_policy="OnFailure"))
    s = await harness.wait_status(failed.key, lambda s: s.phase == "Failed")
    c = s.container_statuses[0]
    assert (c.state, c.reason, c.exit_code, c.restart_count) == ("terminated", "Error", 3, 0)
    s = await harness.wait_status(done.key, lambda s: s.phase == "Succeeded")
    assert s.container_statuses[0].reason == "Completed"


async def test_missing_executable_is_start_error(harness: Harness) -> None:
    c = pb.Container(name="c", image="busybox", command=["no-such-binary-kt"])
    h = await harness.rt.start_pod(harness.pod("noexe", c, restart_policy="Never"))
    s = await harness.wait_status(h.key, lambda s: s.phase == "Failed")
    assert s.container_statuses[0].reason == "StartError"
    assert "no-such-binary-kt" in s.container_statuses[0].message


async def test_exec_output_exit_code_stdin_and_env(harness: Harness) -> None:
    c = pb.Container(name="tools", image="busybox", env=[pb.EnvVar(name="GREETING", value="hi")])
    h = await harness.rt.start_pod(harness.pod("exec-pod", c))
    await harness.wait_status(h.key, running)
    code, out, err = await harness.sh(h.key, 'echo "$GREETING $HOSTNAME"; echo oops >&2; exit 7')
    assert (code, out, err) == (7, "hi exec-pod\n", "oops\n")
    proc = await harness.rt.exec(h.key, "tools", ["cat"], stdin=True)
    out_b, _ = await asyncio.wait_for(proc.communicate(b"via stdin"), 20)
    assert out_b == b"via stdin" and proc.returncode == 0
    with pytest.raises(NotFound, match="container 'nope'"):
        await harness.rt.exec(h.key, "nope", ["true"], stdin=False)
    with pytest.raises(NotFound, match="not running on node"):
        await harness.rt.exec("default/absent", "", ["true"], stdin=False)


async def test_logs_collect_stdout_and_stderr(harness: Harness) -> None:
    c = pb.Container(
        name="logger", image="busybox",
        command=["sh", "-c", "echo out-line; echo err-line >&2; exec sleep infinity"],
    )  # fmt: skip
    h = await harness.rt.start_pod(harness.pod("logs", c))
    path = harness.rt.log_path(h.key, "logger")
    assert path == harness.rt.log_path(h.key, "")

    def both() -> str | None:
        text = path.read_text() if path.exists() else ""
        return text if "out-line" in text and "err-line" in text else None

    assert await wait_for(both, 10, what="both lines in the log")


async def test_ipam_exhaustion_is_event_and_pending(harness: Harness) -> None:
    rt = PodRuntime(
        harness.rt.config, harness.node, "10.244.78.0/30", "10.244.78.1",
        on_status=harness.statuses.append, on_event=lambda *e: harness.events.append(e),
    )  # fmt: skip
    try:
        first = await rt.start_pod(harness.pod("only", TOOLS))
        assert first.ip == "10.244.78.2"
        with pytest.raises(Exhausted, match=r"no free IP in podCIDR 10\.244\.78\.0/30"):
            await rt.start_pod(harness.pod("second", TOOLS))
        ev = [e for e in harness.events if e[0] == "default/second"]
        assert ev and ev[0][1:3] == ("Warning", "FailedCreatePodSandBox")
        last = [s for s in harness.statuses if s.name == "second"][-1]
        assert last.phase == "Pending" and "no free IP" in last.message
        await rt.stop_pod(first.key)
        again = await rt.start_pod(harness.pod("second", TOOLS))
        assert again.ip == "10.244.78.2"
    finally:
        await rt.stop_all()


async def test_teardown_leaves_nothing(harness: Harness) -> None:
    c = pb.Container(name="c", image="busybox", command=["sh", "-c", "sleep 1000 & wait"])
    h = await harness.rt.start_pod(harness.pod("gone", c, pb.Container(name="t", image="alpine")))
    await harness.wait_status(h.key, lambda s: s.ready)

    def four_pids() -> list[int] | None:  # pause, sh, its sleep, tools' sleep
        pids = [int(p) for p in run("ip", "netns", "pids", h.netns).split()]
        return pids if len(pids) >= 4 else None

    pids = await wait_for(four_pids, 10, what="the pod's processes")
    assert h.pause_pid in pids
    log_dir = harness.rt.log_path(h.key, "c").parent
    await harness.rt.stop_pod(h.key)
    assert h.netns not in run("ip", "netns", "list")
    assert not Path(f"/etc/netns/{h.netns}").exists() and not log_dir.exists()
    assert [p for p in pids if alive(p)] == []
    assert harness.rt.pods() == [] and harness.rt.ipam.lookup(h.uid) is None
    with pytest.raises(OSError):
        os.fstat(h.tun_fd)
    assert h.tun_name not in run("ip", "-o", "link")
    assert sandbox.list_netns(harness.prefix) == []


@pytest.mark.parametrize("under_ip_netns_exec", [False, True])
async def test_adopt_or_clean_after_agent_crash(
    harness: Harness, under_ip_netns_exec: bool
) -> None:
    """A crashed agent leaves pods behind; the next one cleans them and keeps their IPs.

    Under ``ip netns exec NODE`` (as ``knemu up`` starts agents) the crashed agent had a
    private mount namespace, so its pod's netns name is not usable from here: the cleanup
    must find the old processes through the recorded pause pid."""
    pod = harness.pod("survivor", TOOLS)
    node_ns = f"ktn{harness.prefix[2:]}"  # unique, but outside the pod name prefix
    prefix: list[str] = []
    if under_ip_netns_exec:
        run("ip", "netns", "add", node_ns)
        prefix = ["ip", "netns", "exec", node_ns]
    script = _CRASHING_AGENT.format(
        state=str(harness.state_dir), prefix=harness.prefix, node=harness.node
    )
    old_pause = 0
    try:
        proc = await asyncio.create_subprocess_exec(
            *prefix, sys.executable, "-c", script, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": _src()},
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(pod.SerializeToString()), 60)
        old_ip, pause_text = out.decode().split()
        old_pause = int(pause_text)
        assert alive(old_pause)  # the crash left the sandbox behind
        await _restart_and_adopt(harness, pod, old_ip, old_pause)
    finally:
        if old_pause and alive(old_pause):
            sandbox.kill_netns_processes(old_pause, 0)
        if under_ip_netns_exec:
            run("ip", "netns", "delete", node_ns)


async def _restart_and_adopt(harness: Harness, pod: pb.Pod, old_ip: str, old_pause: int) -> None:
    # The restarted agent: a new runtime reading the state the crashed one left.
    rt = PodRuntime(
        harness.rt.config, harness.node, "10.244.77.0/24", "10.244.77.1",
        on_status=harness.statuses.append, on_event=lambda *e: harness.events.append(e),
    )  # fmt: skip
    try:
        fresh = await rt.adopt_or_clean([pod])
        assert [x.ip for x in fresh] == [old_ip] and old_ip != "10.244.77.2"
        assert rt.ipam.lookup("other-uid") is None  # not a pod we were given: released
        assert not alive(old_pause)
        assert sandbox.list_netns(harness.prefix) == [fresh[0].netns]
        await wait_for(
            lambda: (s := rt.status(fresh[0].key)) and s.phase == "Running", 15, what="pod"
        )
    finally:
        await rt.stop_all()


def _src() -> str:
    return str(Path(__file__).resolve().parents[3] / "src")


_CRASHING_AGENT = """
import asyncio, os, sys
from knemu.config import AgentConfig
from knemu.node_agent.runtime.pods import PodRuntime
from knemu.proto import knemu_pb2 as pb

async def main():
    pod = pb.Pod.FromString(sys.stdin.buffer.read())
    cfg = AgentConfig(state_dir={state!r}, netns_prefix={prefix!r})
    rt = PodRuntime(cfg, {node!r}, "10.244.77.0/24", "10.244.77.1", id, lambda *e: None)
    rt.ipam.allocate("default/other", "other-uid")  # the crashed pod must not get .2 by luck
    h = await rt.start_pod(pod)
    while rt.status(h.key).phase != "Running":
        await asyncio.sleep(0.02)
    sys.stdout.flush()
    os.write(1, f"{{h.ip}} {{h.pause_pid}}".encode())
    os._exit(0)

asyncio.run(main())
"""


async def test_ten_pods_concurrently(harness: Harness) -> None:
    nginx = pb.Container(name="nginx", image="nginx:1.16")
    pods = [harness.pod(f"sample-{i}", nginx) for i in range(10)]
    handles = await asyncio.gather(*(harness.rt.start_pod(p) for p in pods))
    assert len({h.ip for h in handles}) == 10 and len({h.netns for h in handles}) == 10
    for h in handles:
        await harness.wait_status(h.key, lambda s: s.ready)
    last = handles[-1]
    out = run("ip", "netns", "exec", last.netns, "curl", "-s", f"http://{last.ip}/")
    assert out.startswith(f"Host={last.ip}  Path=/  From=sample-9  ")
    await harness.rt.stop_all()
    assert sandbox.list_netns(harness.prefix) == [] and harness.rt.ipam.allocations() == []


async def test_failed_sandbox_is_rolled_back(harness: Harness) -> None:
    netns = f"{harness.prefix}-{harness.node}-deadbeef"
    with pytest.raises(PodRuntimeError, match="exited"):
        await sandbox.create_sandbox(
            netns=netns, hostname="broken", tun_name=f"{harness.prefix}x", pod_ip="300.1.1.1",
            mtu=1450, resolv_conf="", hosts="",
        )  # fmt: skip
    assert sandbox.list_netns(harness.prefix) == []
    assert f"{harness.prefix}x" not in run("ip", "-o", "link")


def _exec_probe(command: str, period_s: int = 1, failures: int = 3) -> pb.Probe:
    return pb.Probe(exec=pb.ExecAction(command=["sh", "-c", command]), period_s=period_s,
                    failure_threshold=failures)  # fmt: skip


async def test_startup_probe_holds_readiness_until_it_succeeds(harness: Harness) -> None:
    # The container's own /tmp (a private tmpfs) is where the exec probe looks.
    c = pb.Container(
        name="c", image="busybox",
        command=["sh", "-c", "sleep 1.5; touch /tmp/started; exec sleep 1000"],
        has_startup_probe=True, startup_probe=_exec_probe("test -f /tmp/started", failures=30),
        has_readiness_probe=True, readiness_probe=_exec_probe("true"),
    )  # fmt: skip
    h = await harness.rt.start_pod(harness.pod("slow-start", c))
    s = await harness.wait_status(h.key, lambda s: s.container_statuses[0].state == "running")
    assert not s.container_statuses[0].started and not s.ready
    s = await harness.wait_status(h.key, lambda s: s.ready)
    assert s.container_statuses[0].started and s.container_statuses[0].restart_count == 0
    assert s.to_report().container_statuses[0].started


async def test_failing_startup_probe_restarts_container(harness: Harness) -> None:
    c = pb.Container(
        name="c", image="busybox", command=["sleep", "1000"],
        has_startup_probe=True, startup_probe=_exec_probe("false", failures=2),
        has_liveness_probe=True, liveness_probe=_exec_probe("false", failures=1),
    )  # fmt: skip
    h = await harness.rt.start_pod(harness.pod("never-starts", c))
    await harness.wait_status(h.key, lambda s: s.container_statuses[0].restart_count >= 1)
    messages = [e[3] for e in harness.events if e[0] == h.key and e[2] in ("Unhealthy", "Killing")]
    assert any(m.startswith("Startup probe failed") for m in messages), messages
    assert any("failed startup probe" in m for m in messages), messages
    # The liveness probe never ran: it waits for the startup probe.
    assert not any("Liveness" in m for m in messages), messages
