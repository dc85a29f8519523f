"""``knemu external -- CMD...``: run a command on the local cluster's external client.

The external client is the namespace ``knemu up`` puts on the underlay switch outside every
node (``local_plan.Cluster.external_ns``, address .2 of the node subnet): traffic from there
reaches NodePorts as a client on the internet reaches a real cluster's nodes, not through a
node's own routes.  With compose the same role is the ``external`` service
(``scripts/compose exec external curl ...``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from knemu.cli.commands.local import list_namespaces, load_state
from knemu.cli.commands.local_plan import DEFAULT_NAME, DEFAULT_SUBNET, STATE_ROOT, Cluster
from knemu.errors import KnemuError, LocalError


def external_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default=DEFAULT_NAME, help="cluster name")
    parser.add_argument("--state-dir", default=STATE_ROOT, help="where state and logs are")


def external_run(args: argparse.Namespace) -> int:
    command: list[str] = list(getattr(args, "command", None) or [])
    try:
        if not command:
            raise LocalError(
                "no command given: put it after `--`, e.g. "
                "`knemu external -- curl http://NODE_IP:NODE_PORT/`"
            )
        cluster = Cluster(args.name, DEFAULT_SUBNET, 0, args.state_dir)
        # Not "every component runs": the client must keep working while chaos kills nodes.
        if load_state(cluster) is None or cluster.external_ns not in list_namespaces(
            cluster.external_ns
        ):
            raise LocalError(
                f"no running cluster {cluster.name!r} under {cluster.state_dir}; start one with "
                f"`knemu up --name {cluster.name}` (or pass --name/--state-dir)"
            )
    except KnemuError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    argv = ["ip", "netns", "exec", cluster.external_ns, *command]
    try:
        return subprocess.run(argv, check=False).returncode
    except FileNotFoundError:
        print("error: `ip` (iproute2) is not installed; it runs the command", file=sys.stderr)
        return 1
