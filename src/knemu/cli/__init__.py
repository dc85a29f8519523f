"""The ``knemu`` command line: kubectl for knemu, plus the commands that run its components.

``main(argv) -> int`` dispatches through ``TABLE``: each subcommand names its two functions in
``knemu.cli.commands`` as ``"module:function"`` (``"local:up_add_arguments"`` and
``"local:up_run"`` for ``knemu up``), so every entry point can be found by its name.
Only the chosen subcommand's module is imported, so a command's dependencies (aiohttp for
exec/attach/logs, ...) cost nothing to the others, and a module that is missing or broken
gives a clear error for that subcommand and never breaks the others.  Output (tables, -o
formats, JSONPath, describe) is in ``knemu.cli.output``; the REST client in ``knemu.cli.client``.

Every subcommand gets ``args.server`` (``--server``, else ``$KNEMU_SERVER``, else the
kubeconfig's, else https://127.0.0.1:6443), ``args.client`` (an ``ApiClient`` for it, with the
kubeconfig's credentials) and ``args.verbose``; the
user commands also get ``-n/--namespace``.  Errors are printed like kubectl
(``Error from server (NotFound): ...``, ``error: ...``) and become exit codes: 1 for failures,
2 for bad flags or configuration.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from knemu.cli.client import DEFAULT_SERVER, SERVER_ENV, ApiClient, StatusError
from knemu.errors import KnemuError

log = logging.getLogger("knemu.cli")


COMMANDS_PACKAGE = "knemu.cli.commands"


@dataclass(frozen=True)
class Command:
    """One subcommand: ``add_arguments(parser)`` and ``run(args) -> int``, each named
    ``"module:function"`` with the module under ``knemu.cli.commands``."""

    name: str
    add_arguments: str
    run: str
    help: str
    user: bool = True  # a kubectl-like command: gets -n/--namespace
    split_command: bool = False  # everything after "--" is args.command


_OWN = False  # not a kubectl-like command: no -n/--namespace
TABLE: tuple[Command, ...] = (
    Command("apply", "apply:add_arguments", "apply:run", "create or update objects from manifests"),
    Command("get", "get:add_arguments", "get:run", "list objects"),
    Command("describe", "describe:add_arguments", "describe:run", "show objects in detail"),
    Command("delete", "delete:add_arguments", "delete:run", "delete objects"),
    Command(
        "patch",
        "patch:patch_add_arguments",
        "patch:patch_run",
        "update fields of an object (strategic merge patch)",
    ),
    Command(
        "scale",
        "patch:scale_add_arguments",
        "patch:scale_run",
        "set the replicas of a deployment or replicaset",
    ),
    Command(
        "exec",
        "exec:exec_add_arguments",
        "exec:exec_run",
        "run a command in a container",
        split_command=True,
    ),
    Command(
        "attach",
        "attach:attach_add_arguments",
        "attach:attach_run",
        "attach to a running container's main process",
    ),
    Command(
        "run",
        "run:run_add_arguments",
        "run:run_run",
        "start a pod and attach to it",
        split_command=True,
    ),
    Command("logs", "logs:logs_add_arguments", "logs:logs_run", "print a container's output"),
    Command(
        "port-forward",
        "portforward:port_forward_add_arguments",
        "portforward:port_forward_run",
        "forward local ports to a pod",
    ),
    Command(
        "flows",
        "observe:flows_add_arguments",
        "observe:flows_run",
        "stream flow events from the nodes",
        _OWN,
    ),
    Command(
        "trace",
        "observe:trace_add_arguments",
        "observe:trace_run",
        "follow one probe hop by hop",
        _OWN,
    ),
    Command(
        "capture",
        "capture:add_arguments",
        "capture:run",
        "write pcap of a node's underlay or a pod's eth0",
    ),
    Command(
        "console",
        "console:add_arguments",
        "console:run",
        "print (or --open) the web console's URL",
        _OWN,
    ),
    Command(
        "cni",
        "cni:cni_add_arguments",
        "cni:cni_run",
        "show a node's CNI network config (conflist)",
        _OWN,
    ),
    Command(
        "bgp",
        "bgp:bgp_add_arguments",
        "bgp:bgp_run",
        "show nodes' BGP sessions and learned routes (calicoctl node status)",
        _OWN,
    ),
    Command("chaos", "chaos:add_arguments", "chaos:run", "break nodes and links on purpose", _OWN),
    Command(
        "image",
        "image:add_arguments",
        "image:run",
        "load container images into the nodes, list them",
        _OWN,
    ),
    Command(
        "up",
        "local:up_add_arguments",
        "local:up_run",
        "start a local cluster in network namespaces",
        _OWN,
    ),
    Command("down", "local:down_add_arguments", "local:down_run", "stop the local cluster", _OWN),
    Command(
        "external",
        "external:external_add_arguments",
        "external:external_run",
        "run a command on the local cluster's external client (outside every node)",
        _OWN,
        split_command=True,
    ),
    Command(
        "kubeconfig",
        "kubeconfig:kubeconfig_add_arguments",
        "kubeconfig:kubeconfig_run",
        "print a kubeconfig for kubectl",
        _OWN,
    ),
    Command(
        "apiserver",
        "components:apiserver_add_arguments",
        "components:apiserver_run",
        "run the api-server",
        _OWN,
    ),
    Command(
        "agent", "components:agent_add_arguments", "components:agent_run", "run a node agent", _OWN
    ),
    Command(
        "dns", "components:dns_add_arguments", "components:dns_run", "run the cluster DNS", _OWN
    ),
)

_BY_NAME = {c.name: c for c in TABLE}


class CommandUnavailable(KnemuError):
    """The module implementing a subcommand cannot be imported."""


def _function(command: Command, name: str) -> Callable[..., Any]:
    module_name, _, function_name = name.partition(":")
    path = f"{COMMANDS_PACKAGE}.{module_name}"
    try:
        function: Callable[..., Any] = getattr(importlib.import_module(path), function_name)
    except (ImportError, AttributeError) as exc:
        raise CommandUnavailable(
            f"knemu {command.name} is not available in this installation: {path} "
            f"could not be loaded ({exc}); check that knemu is installed completely"
        ) from None
    return function


def _load(command: Command) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[..., int]]:
    return _function(command, command.add_arguments), _function(command, command.run)


def _add_globals(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--server",
        "-s",
        default=default,
        metavar="URL",
        help=f"api-server URL (default ${SERVER_ENV}, the kubeconfig's, or {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=default, help="log more (-vv for debug)"
    )


def build_parser(chosen: str | None) -> argparse.ArgumentParser:
    """The parser; only the chosen subcommand's module is imported for its flags."""
    parser = argparse.ArgumentParser(
        prog="knemu", description="Emulated Kubernetes cluster network: kubectl-like CLI."
    )
    _add_globals(parser, None)
    subs = parser.add_subparsers(dest="command_name", metavar="COMMAND")
    for command in TABLE:
        sub = subs.add_parser(command.name, help=command.help, description=command.help)
        if command.name != chosen:
            continue
        # SUPPRESS: a value given before the subcommand is not overwritten by a default here.
        _add_globals(sub, argparse.SUPPRESS)
        if command.user:
            sub.add_argument("-n", "--namespace", default=None, help="namespace (default: default)")
        add_arguments, run = _load(command)
        add_arguments(sub)
        sub.set_defaults(func=run)
    return parser


def _chosen(argv: Sequence[str]) -> str | None:
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token in ("--server", "-s"):
            skip = True
        elif token == "--":
            return None
        elif not token.startswith("-"):
            return token if token in _BY_NAME else None
    return None


def _split_command(argv: list[str], chosen: str | None) -> tuple[list[str], list[str] | None]:
    if chosen is None or not _BY_NAME[chosen].split_command or "--" not in argv:
        return argv, None
    i = argv.index("--")
    return argv[:i], argv[i + 1 :]


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("knemu").setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one knemu command; returns its exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    chosen = _chosen(args_list)
    head, command = _split_command(args_list, chosen)
    try:
        parser = build_parser(chosen)
        args = parser.parse_args(head)
    except SystemExit as exc:  # --help or a usage error, already printed by argparse
        return exc.code if isinstance(exc.code, int) else 2
    except KnemuError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    if command is not None:
        args.command = command
    return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    args.verbose = args.verbose or 0
    setup_logging(args.verbose)
    try:
        args.client = ApiClient(args.server or os.environ.get(SERVER_ENV) or None)
        args.server = args.client.server
        return int(args.func(args))
    except StatusError as exc:
        print(exc.message, file=sys.stderr)
        return exc.exit_code
    except KnemuError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `knemu get pods | head`
        return 0
