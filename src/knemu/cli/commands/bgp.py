"""``knemu bgp [NODE]``: each node's BGP speaker, as ``calicoctl node status`` shows it.

Reads the ``bgp`` part of the node's ``GET /table`` (BIRD's sessions and the routes it learned,
read from BIRD's control socket by the agent) through the api-server's node proxy.  A node not
running the bgp backend says so.
"""

from __future__ import annotations

import argparse
from typing import Any

from knemu.cli.client import ApiClient
from knemu.cli.commands.observe import node_names, proxy_path


def bgp_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("node", nargs="?", help="only this node (default: every node)")


def format_status(node: str, table: dict[str, Any]) -> list[str]:
    bgp = table.get("bgp")
    if bgp is None:
        return [f"{node}: network backend {table.get('backend', 'vxlan')}, no BGP speaker", ""]
    lines = [
        f"{node}: BIRD, router id {bgp['router_id']}, AS {bgp['asn']}, "
        f"hold time {bgp['hold_time_s']} s",
        "IPv4 BGP status",
        f"{'PEER ADDRESS':<16} {'PEER TYPE':<18} {'STATE':<6} {'SINCE':<14} {'INFO':<24} PROTOCOL",
    ]
    for s in bgp["sessions"]:
        address, kind = peer_of(s["peer"], bgp)
        lines.append(f"{address:<16} {kind:<18} {s['state']:<6} {s['since']:<14} "
                     f"{s['info']:<24} {s['peer']}")  # fmt: skip
    lines += ["Routes learned over BGP", f"{'PREFIX':<20} {'VIA':<16} FROM"]
    for r in bgp["routes"]:
        lines.append(f"{r['prefix']:<20} {r['via']:<16} {r['protocol']}")
    return [*lines, ""]


def peer_of(protocol: str, bgp: dict[str, Any]) -> tuple[str, str]:
    """(peer address, calicoctl's PEER TYPE) of a BIRD protocol named as the agent names them:
    ``Mesh_<ip>`` (node-to-node mesh, or a route reflector session) and ``Global_<ip>``."""
    prefix, _, rest = protocol.partition("_")
    address = rest.replace("_", ".")
    reflectors = bgp.get("route_reflectors") or []
    if prefix == "Global":
        return address, "global"
    if address in reflectors:
        return address, "route reflector"
    if bgp.get("router_id") in reflectors:
        return address, "rr client"
    return address, "node-to-node mesh"


def bgp_run(args: argparse.Namespace) -> int:
    client: ApiClient = args.client
    nodes = [args.node] if args.node else node_names(client)
    for node in nodes:
        print("\n".join(format_status(node, client.request("GET", proxy_path(node, "table")))))
    return 0
