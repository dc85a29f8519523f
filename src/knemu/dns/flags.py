"""Flags of `knemu dns`, mapped to ``DnsConfig`` by a table.

The names match those of ``knemu dns`` (cli.commands.components: one flag per DnsConfig field).
``main(argv)`` backs ``python -m knemu.dns --listen 127.0.0.1:5353 --apiserver HOST:PORT``, for
running the component without the CLI package.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from knemu.config import DnsConfig
from knemu.errors import ConfigError

# flag, DnsConfig field, type, help
FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--apiserver", "apiserver", str, "gRPC address of the api-server (HOST:PORT)"),
    ("--listen", "listen", str, "UDP and TCP address to answer on (HOST:PORT; port 0: any)"),
    ("--metrics-listen", "metrics_listen", str, "address of /metrics, /health, /ready"),
    ("--zone", "zone", str, "the cluster domain served authoritatively"),
    ("--ttl-s", "ttl_s", int, "TTL of every record, seconds"),
    ("--upstream", "upstream", str, "HOST:PORT for names outside the zone (empty: REFUSED)"),
    ("--pods-mode", "pods_mode", str, "pod records: insecure | verified | disabled"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = DnsConfig()
    for flag, name, kind, text in FLAGS:
        default = getattr(defaults, name)
        parser.add_argument(flag, dest=f"dns_{name}", type=kind, default=None,
                            metavar=name.upper(), help=f"{text} (default {default!r})")  # fmt: skip


def config_from_args(args: argparse.Namespace) -> DnsConfig:
    """The flags that were given, over the defaults; ConfigError names a bad one."""
    values: dict[str, Any] = {}
    for _flag, name, _kind, _text in FLAGS:
        value = getattr(args, f"dns_{name}", None)
        if value is not None:
            values[name] = value
    return DnsConfig.from_mapping(values)


def run_args(args: argparse.Namespace) -> int:
    from knemu.dns.server import run

    return run(config_from_args(args))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="knemu dns", description="the cluster DNS (CoreDNS)")
    add_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        return run_args(args)
    except ConfigError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
