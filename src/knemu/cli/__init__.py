"""The ``knemu`` command line: kubectl for knemu, plus the commands that run its components.

``main(argv) -> int`` dispatches through ``TABLE``: each subcommand names the module that
implements it and the prefix of that module's ``add_arguments(parser)`` / ``run(args) -> int``
functions (``knemu.cli.local.up_add_arguments`` / ``up_run`` for ``knemu up``).
Only the chosen subcommand's module is imported, so a component that is missing or broken
gives a clear error for that subcommand and never breaks the others.

Every subcommand gets ``args.server`` (``--server``, else ``$KNEMU_SERVER``, else
http://127.0.0.1:6443), ``args.client`` (an ``ApiClient`` for it) and ``args.verbose``; the
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


@dataclass(frozen=True)
class Command:
    """One subcommand: ``knemu.cli.<module>`` provides ``<prefix>add_arguments(parser)`` and
    ``<prefix>run(args) -> int``."""

    name: str
    module: str  # under knemu.cli
    prefix: str  # of the two function names
    help: str
    user: bool = True  # a kubectl-like command: gets -n/--namespace
    split_command: bool = False  # everything after "--" is args.command

    @property
    def module_path(self) -> str:
        return f"knemu.cli.{self.module}"


_OWN = False  # not a kubectl-like command: no -n/--namespace
TABLE: tuple[Command, ...] = (
    Command("apply", "apply", "", "create or update objects from manifests"),
    Command("get", "get", "", "list objects"),
    Command("describe", "describe", "", "show objects in detail"),
    Command("delete", "delete", "", "delete objects"),
    Command("patch", "patch", "patch_", "update fields of an object (strategic merge patch)"),
    Command("scale", "patch", "scale_", "set the replicas of a deployment or replicaset"),
    Command("exec", "exec", "exec_", "run a command in a container", split_command=True),
    Command("attach", "attach", "attach_", "attach to a running container's main process"),
    Command("run", "run", "run_", "start a pod and attach to it", split_command=True),
    Command("logs", "logs", "logs_", "print a container's output"),
    Command("port-forward", "portforward", "port_forward_", "forward local ports to a pod"),
    Command("flows", "observe", "flows_", "stream flow events from the nodes", _OWN),
    Command("trace", "observe", "trace_", "follow one probe hop by hop", _OWN),
    Command("cni", "cni", "cni_", "show a node's CNI network config (conflist)", _OWN),
    Command("chaos", "chaos", "", "break nodes and links on purpose", _OWN),
    Command("image", "image", "", "load container images into the nodes, list them", _OWN),
    Command("up", "local", "up_", "start a local cluster in network namespaces", _OWN),
    Command("down", "local", "down_", "stop the local cluster", _OWN),
    Command("apiserver", "components", "apiserver_", "run the api-server", _OWN),
    Command("agent", "components", "agent_", "run a node agent", _OWN),
    Command("dns", "components", "dns_", "run the cluster DNS", _OWN),
)

_BY_NAME = {c.name: c for c in TABLE}


class CommandUnavailable(KnemuError):
    """The module implementing a subcommand cannot be imported."""


def _load(command: Command) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[..., int]]:
    try:
        module = importlib.import_module(command.module_path)
        add_arguments = getattr(module, command.prefix + "add_arguments")
        return add_arguments, getattr(module, command.prefix + "run")
    except (ImportError, AttributeError) as exc:
        raise CommandUnavailable(
            f"knemu {command.name} is not available in this installation: {command.module_path} "
            f"could not be loaded ({exc}); check that knemu is installed completely"
        ) from None


def _add_globals(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--server",
        "-s",
        default=default,
        metavar="URL",
        help=f"api-server URL (default ${SERVER_ENV} or {DEFAULT_SERVER})",
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
    args.server = args.server or os.environ.get(SERVER_ENV) or DEFAULT_SERVER
    args.client = ApiClient(args.server)
    setup_logging(args.verbose)
    try:
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
