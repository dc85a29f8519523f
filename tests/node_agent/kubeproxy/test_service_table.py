"""The compiled service table: rule keys, validation, multi-port, nodePort, externalIPs."""

from __future__ import annotations

import json

import pytest

from knemu.errors import ConfigError
from knemu.node_agent.dataplane.router import OUT_HOST, OUT_POD, OUT_UNDERLAY
from knemu.node_agent.kubeproxy.service_table import (
    Backend,
    ServiceEntry,
    ServicePortEntry,
    ServiceTable,
)
from knemu.proto import wire

from .._cluster import POD_A, POD_B, POD_C, POD_D, VIP, pair, syn, valid


def _key(ip: str, port: int) -> bytes:
    return wire.ip_to_bytes(ip) + port.to_bytes(2, "big")


def test_multi_port_named_target_ports_resolve_per_pod() -> None:
    """Seed 003: one service, ports http (8080 -> named port resolving to 80 / 81 per pod)."""
    p = pair()
    entry = ServiceEntry(
        "default/sample",
        (VIP,),
        (ServicePortEntry("http", "TCP", 8080), ServicePortEntry("metrics", "TCP", 9090)),
    )
    backends = {
        "http": [Backend(POD_C, 81, True)],
        "metrics": [Backend(POD_C, 9100, True)],
    }
    p.r1.set_service(entry.key, entry, backends)
    for port, target in ((8080, 81), (9090, 9100)):
        out = p.r1.handle_pod("a", syn(POD_A, VIP, 1000 + port, port), 1.0)
        assert out is not None and out[:2] == (OUT_POD, "c")
        assert wire.decode_tcp(valid(out[2]).payload).dst_port == target


def test_node_port_and_external_ip_rules() -> None:
    p = pair()
    entry = ServiceEntry(
        "default/web",
        (VIP,),
        (ServicePortEntry("http", "TCP", 80, node_port=30080),),
        external_ips=("203.0.113.10",),
    )
    p.r1.set_service(entry.key, entry, {"http": [Backend(POD_B, 8080, True)]})
    for dst, port in (("203.0.113.10", 80), ("192.168.59.11", 30080)):
        out = p.r1.handle_pod("a", syn(POD_A, dst, 2000 + port, port), 1.0)
        assert out is not None and out[0] == OUT_UNDERLAY
        assert valid(bytes(out[2])[22:]).dst == POD_B
    # the node IP on another port still reaches the node itself
    out = p.r1.handle_pod("a", syn(POD_A, "192.168.59.11", 3000, 10250), 1.0)
    assert out is not None and out[0] == OUT_HOST


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (ServiceEntry("a/b", (VIP,), (ServicePortEntry("x", "ICMP", 80),)), "protocol 'ICMP'"),
        (ServiceEntry("a/b", (VIP,), (ServicePortEntry("x", "TCP", 0),)), "port 0"),
        (ServiceEntry("a/b", (VIP,), (ServicePortEntry("x", "TCP", 80, 70000),)), "nodePort"),
        (ServiceEntry("a/b", (), (ServicePortEntry("x", "TCP", 80),)), "no IPv4 ClusterIP"),
        (ServiceEntry("a/b", ("10.96.0.300",), (ServicePortEntry("x", "TCP", 80),)), "IPv4"),
    ],
)
def test_invalid_entries_name_service_and_field(entry: ServiceEntry, message: str) -> None:
    p = pair()
    with pytest.raises(ConfigError, match="a/b") as err:
        p.r1.set_service("a/b", entry, {})
    assert message in err.value.message


def test_key_mismatch_and_bad_backend_port() -> None:
    p = pair()
    entry = ServiceEntry("a/b", (VIP,), (ServicePortEntry("x", "TCP", 80),))
    with pytest.raises(ConfigError, match="must match"):
        p.r1.set_service("a/c", entry, {})
    with pytest.raises(ConfigError, match=r"backend 10\.244\.2\.7 target port"):
        p.r1.set_service("a/b", entry, {"x": [Backend(POD_B, 0, True)]})


def test_sctp_ports_and_ipv6_addresses_are_skipped() -> None:
    table = ServiceTable()
    entry = ServiceEntry(
        "a/b",
        ("fd00::10", VIP),
        (ServicePortEntry("s", "SCTP", 9), ServicePortEntry("t", "TCP", 80)),
    )
    table.set_service(entry, {"t": [Backend("fd00::5", 80, True), Backend(POD_B, 80, True)]})
    assert set(table.rules[6]) == {_key(VIP, 80)}
    snap = json.loads(json.dumps(table.snapshot()))
    (port,) = snap[0]["ports"]
    assert port["protocol"] == "TCP"
    assert [b["ip"] for b in port["backends"]] == [POD_B]


def test_update_keeps_round_robin_position_and_vips_refcounted() -> None:
    table = ServiceTable("ipvs", "rr")
    backends = [Backend(ip, 80, True) for ip in (POD_A, POD_B, POD_C)]
    web = ServiceEntry("a/web", (VIP,), (ServicePortEntry("h", "TCP", 80),))
    other = ServiceEntry("a/other", (VIP,), (ServicePortEntry("h", "UDP", 53),))
    table.set_service(web, {"h": backends})
    table.set_service(other, {"h": backends})
    cp = table.rules[6][_key(VIP, 80)]
    first = table.pick(cp, b"\x01\x02\x03\x04", 0.0)
    assert first is not None and first.backend.ip == POD_A
    table.set_service(web, {"h": [*backends, Backend(POD_D, 80, True)]})
    cp = table.rules[6][_key(VIP, 80)]
    second = table.pick(cp, b"\x01\x02\x03\x04", 0.0)
    assert second is not None and second.backend.ip == POD_B
    table.remove_service("a/web")
    assert wire.ip_to_bytes(VIP) in table.vips  # still used by a/other
    table.remove_service("a/other")
    assert not table.vips and not table.rules[6] and not table.rules[17]


def test_bad_modes_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="proxy_mode 'nftables'"):
        ServiceTable("nftables")
    with pytest.raises(ConfigError, match="ipvs_scheduler 'wrr'"):
        ServiceTable("ipvs", "wrr")
