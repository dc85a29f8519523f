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
        f"{'PEER':<24} {'STATE':<6} {'SINCE':<14} INFO",
    ]
    for s in bgp["sessions"]:
        lines.append(f"{s['peer']:<24} {s['state']:<6} {s['since']:<14} {s['info']}")
    lines += ["Routes learned over BGP", f"{'PREFIX':<20} {'VIA':<16} FROM"]
    for r in bgp["routes"]:
        lines.append(f"{r['prefix']:<20} {r['via']:<16} {r['protocol']}")
    return [*lines, ""]


def bgp_run(args: argparse.Namespace) -> int:
    client: ApiClient = args.client
    nodes = [args.node] if args.node else node_names(client)
    for node in nodes:
        print("\n".join(format_status(node, client.request("GET", proxy_path(node, "table")))))
    return 0
