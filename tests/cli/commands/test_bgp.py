"""``knemu bgp``: a node's BIRD status printed as calicoctl node status does."""

from __future__ import annotations

from knemu.cli.commands.bgp import format_status, peer_of


def test_sessions_and_routes_are_printed() -> None:
    table = {
        "backend": "bgp",
        "bgp": {
            "router_id": "192.168.59.11", "asn": 64512, "hold_time_s": 9,
            "route_reflectors": [],
            "sessions": [{"peer": "Mesh_192_168_59_12", "state": "up",
                          "since": "04:47:45.887", "info": "Established"}],
            "routes": [{"prefix": "10.244.2.0/24", "via": "192.168.59.12",
                        "protocol": "Mesh_192_168_59_12"}],
        },
    }  # fmt: skip
    text = "\n".join(format_status("node-1", table))
    assert "router id 192.168.59.11, AS 64512, hold time 9 s" in text
    assert (
        "192.168.59.12    node-to-node mesh  up     04:47:45.887   Established              "
        "Mesh_192_168_59_12"
    ) in text
    assert "10.244.2.0/24        192.168.59.12    Mesh_192_168_59_12" in text


def test_peer_types_are_calicoctls() -> None:
    bgp = {"router_id": "192.168.59.12", "route_reflectors": ["192.168.59.11"]}
    assert peer_of("Mesh_192_168_59_11", bgp) == ("192.168.59.11", "route reflector")
    assert peer_of("Global_192_168_59_70", bgp) == ("192.168.59.70", "global")
    reflector = {"router_id": "192.168.59.11", "route_reflectors": ["192.168.59.11"]}
    assert peer_of("Mesh_192_168_59_12", reflector) == ("192.168.59.12", "rr client")


def test_a_node_without_bgp_says_so() -> None:
    assert format_status("node-1", {"backend": "vxlan"})[0] == (
        "node-1: network backend vxlan, no BGP speaker"
    )
