"""``python -m knemu.apiserver [--listen HOST:PORT] [--grpc-listen HOST:PORT] [--data-dir DIR]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from knemu.apiserver.server import run
from knemu.config import ApiServerConfig, Timings
from knemu.errors import ConfigError

# flag -> (config field, type, help); mapped with a table, not an if-chain.
FLAGS: dict[str, tuple[str, type, str]] = {
    "--listen": ("listen", str, "REST address HOST:PORT (port 0: any free port)"),
    "--grpc-listen": ("grpc_listen", str, "gRPC address HOST:PORT (port 0: any free port)"),
    "--data-dir": ("data_dir", str, "directory holding knemu.db"),
    "--cluster-cidr": ("cluster_cidr", str, "pod network, split into one /24 per node"),
    "--service-cidr": ("service_cidr", str, "ClusterIP range"),
    "--watch-queue-events": ("watch_queue_events", int, "per-watcher queue bound"),
    "--event-history": ("event_history", int, "events kept for resuming watches"),
}


def parse(argv: Sequence[str]) -> ApiServerConfig:
    parser = argparse.ArgumentParser(prog="knemu-apiserver", description=__doc__)
    for flag, (dest, kind, text) in FLAGS.items():
        parser.add_argument(flag, dest=dest, type=kind, help=text)
    parser.add_argument(
        "--kubernetes-timings",
        action="store_true",
        help="upstream node lifecycle timings (lease 10 s, grace 40 s, eviction 300 s)",
    )
    args = parser.parse_args(argv)
    values: dict[str, Any] = {
        dest: getattr(args, dest)
        for dest, _, _ in FLAGS.values()
        if getattr(args, dest) is not None
    }
    if args.kubernetes_timings:
        values["timings"] = Timings.kubernetes()
    return ApiServerConfig.from_mapping(values)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = parse(sys.argv[1:] if argv is None else argv)
    except ConfigError as err:
        print(f"knemu apiserver: {err.message}", file=sys.stderr)
        return err.exit_code
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
