"""``python -m knemu.ingress``: the ingress controller, configured like ingress-nginx's
(``--ingress-class``, ``--publish-service``, ``--http-port``, ``--https-port``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from knemu.errors import KnemuError
from knemu.ingress.apiclient import in_cluster_config
from knemu.ingress.controller import ControllerConfig, running

FLAGS = (  # flag, dest, type, default, help
    ("--ingress-class", "ingress_class", str, "knemu", "the IngressClass whose Ingresses to serve"),
    ("--publish-service", "publish_service", str, "",
     "NAMESPACE/NAME of the LoadBalancer Service whose addresses go into Ingress status"),
    ("--apiserver", "apiserver", str, "", "api-server URL (default: in-cluster configuration)"),
    ("--listen", "listen", str, "0.0.0.0", "address of both listeners"),
    ("--http-port", "http_port", int, 80, "plain HTTP port"),
    ("--https-port", "https_port", int, 443, "TLS port (certificates from the Ingresses' Secrets)"),
)  # fmt: skip


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m knemu.ingress", description=__doc__)
    for flag, dest, kind, default, help_text in FLAGS:
        parser.add_argument(flag, dest=dest, type=kind, default=default, help=help_text)
    return parser.parse_args(argv)


async def serve(config: ControllerConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running(config):
        logging.getLogger(__name__).info(
            "serving IngressClass %s on %s:%d and :%d (TLS)",
            config.ingress_class, config.listen, config.http_port, config.https_port,
        )  # fmt: skip
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        cluster = in_cluster_config(os.environ, args.apiserver)
        config = ControllerConfig(cluster, args.ingress_class, args.publish_service,
                                  args.listen, args.http_port, args.https_port)  # fmt: skip
        asyncio.run(serve(config))
    except KnemuError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"error: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
