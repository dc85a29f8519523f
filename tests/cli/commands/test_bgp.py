"""``knemu bgp``: a node's BIRD status printed as calicoctl node status does."""

from __future__ import annotations

from knemu.cli.commands.bgp import format_status


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
    assert "Mesh_192_168_59_12       up     04:47:45.887   Established" in text
    assert "10.244.2.0/24        192.168.59.12    Mesh_192_168_59_12" in text


def test_a_node_without_bgp_says_so() -> None:
    assert format_status("node-1", {"backend": "vxlan"})[0] == (
        "node-1: network backend vxlan, no BGP speaker"
    )
