"""BIRD configuration rendering and status parsing (sans-I/O), with BIRD 2.0.12's own output
as vectors."""

from __future__ import annotations

import pytest

from knemu.errors import ConfigError
from knemu.node_agent.dataplane.backends import bird

NODES = ("192.168.59.11", "192.168.59.12", "192.168.59.13")

PROTOCOLS = """BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     04:47:41.833
pods       Static     master4    up     04:47:41.833
kernel1    Kernel     master4    up     04:47:41.833
Mesh_192_168_239_12 BGP        ---        up     04:47:45.887  Established
Mesh_192_168_239_13 BGP  ---  start  04:47:48.130  Active  Socket: Connection closed
"""
ROUTES = """BIRD 2.0.12 ready.
Table master4:
10.244.1.0/24        blackhole [pods 04:47:41.833] * (200)
10.244.2.0/24        unicast [Mesh_192_168_239_12 04:47:45.901] * (100) [i]
\tvia 192.168.239.12 on eth0
"""


def config(ip: str, **kw: object) -> bird.BgpConfig:
    n = NODES.index(ip) + 1
    return bird.BgpConfig(f"node-{n}", ip, f"10.244.{n}.0/24", NODES, **kw)  # type: ignore[arg-type]


def test_mesh_has_one_session_per_other_node_and_announces_the_pod_cidr() -> None:
    text = bird.render(config("192.168.59.11"))
    assert "router id 192.168.59.11;" in text
    assert "route 10.244.1.0/24 blackhole;" in text
    assert "hold time 9;" in text and "keepalive time 3;" in text
    sessions = [line for line in text.splitlines() if line.startswith("protocol bgp")]
    assert sessions == [
        "protocol bgp Mesh_192_168_59_12 from mesh { neighbor 192.168.59.12 as 64512; }",
        "protocol bgp Mesh_192_168_59_13 from mesh { neighbor 192.168.59.13 as 64512; }",
    ]


def test_route_reflectors_replace_the_mesh() -> None:
    rr = ("192.168.59.11",)
    assert bird.sessions_of(config("192.168.59.12", route_reflectors=rr)) == [
        ("192.168.59.11", False)
    ]
    assert bird.sessions_of(config("192.168.59.11", route_reflectors=rr)) == [
        ("192.168.59.12", True),
        ("192.168.59.13", True),
    ]
    reflector = bird.render(config("192.168.59.11", route_reflectors=rr))
    assert "rr client;" in reflector
    # A reflector passes on the originator's next hop: pod traffic goes node to node.
    assert "next hop self" not in reflector
    assert "next hop self" in bird.render(config("192.168.59.11"))


def test_external_peers_are_global_sessions() -> None:
    peers = bird.parse_external_peers("192.168.59.70:64600, 192.168.59.71")
    assert peers == (("192.168.59.70", 64600), ("192.168.59.71", 64512))
    text = bird.render(config("192.168.59.11", external_peers=peers))
    assert (
        "protocol bgp Global_192_168_59_70 from mesh { neighbor 192.168.59.70 as 64600; "
        "allow local as; }" in text
    )
    with pytest.raises(ConfigError, match="give IP:AS"):
        bird.parse_external_peers("tor:64600")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"underlay_ip": "nope"}, "'nope' is not an IPv4 address"),
        ({"pod_cidr": "10.244.1"}, "podCIDR"),
        ({"hold_time_s": 2}, "hold time 2"),
        ({"asn": 0}, "AS 0"),
    ],
)
def test_bad_settings_name_the_node(change: dict[str, object], message: str) -> None:
    cfg = config("192.168.59.11")
    bad = bird.BgpConfig(**{**cfg.__dict__, **change})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="node-1 BGP") as err:
        bird.render(bad)
    assert message in err.value.message


def test_parse_birdc_output() -> None:
    sessions = bird.parse_protocols(PROTOCOLS)
    assert [(s.name, s.state, s.established) for s in sessions] == [
        ("Mesh_192_168_239_12", "up", True),
        ("Mesh_192_168_239_13", "start", False),
    ]
    assert sessions[1].info == "Active Socket: Connection closed"
    routes = bird.parse_routes(ROUTES)
    assert [(r.prefix, r.via, r.protocol, r.best) for r in routes] == [
        ("10.244.2.0/24", "192.168.239.12", "Mesh_192_168_239_12", True)
    ]
    assert bird.parse_routes("") == [] and bird.parse_protocols("garbage\n") == []
