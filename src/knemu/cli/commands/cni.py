"""``knemu cni [NODE]``: the CNI network configuration a node's agent implements.

On a real node this is ``cat /etc/cni/net.d/10-calico.conflist`` (seed 001).  Each knemu agent
writes the list of plugins it actually is (``knemu.node_agent.cni.conflist``) and serves it at
``GET /cni``, reached through the api-server's node proxy as ``knemu flows`` is.  One node
prints its conflist; without NODE the output is one JSON object, node name -> conflist.
"""

from __future__ import annotations

import argparse
import json

from knemu.cli.client import ApiClient
from knemu.cli.commands.observe import node_names, proxy_path


def cni_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("node", nargs="?", help="only this node (default: every node)")


def cni_run(args: argparse.Namespace) -> int:
    client: ApiClient = args.client
    if args.node:
        print(json.dumps(client.request("GET", proxy_path(args.node, "cni")), indent=2))
        return 0
    confs = {node: client.request("GET", proxy_path(node, "cni")) for node in node_names(client)}
    print(json.dumps(confs, indent=2))
    return 0
