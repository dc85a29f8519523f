"""``knemu capture node/NAME|pod/NAME``: packets as tcpdump would see them, in pcap(ng).

The capture runs on the node (``GET /api/v1/nodes/NODE/proxy/capture``, the agent's
``/capture``, see ``knemu.node_agent.kubelet.capture``): ``node/NAME`` records the node's
underlay (VXLAN datagrams with their outer IPv4/UDP headers, as on the wire), ``pod/NAME`` the
pod's eth0 (its IP packets).  ``-w FILE`` writes the stream to a file, ``-w -`` to stdout as it
arrives, so ``knemu capture node/node-1 -w - | tshark -r -`` decodes it live; without ``-w``
each packet is printed on one line.  A summary (packets, and drops when the node could not
hand packets over fast enough) goes to stderr at the end.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import IO, Any

from knemu.cli.client import ApiClient, resolve_kind
from knemu.errors import LocalError
from knemu.node_agent.dataplane.capture import CaptureReader, describe_packet

CHUNK_BYTES = 65536


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="node/NAME|pod/NAME", help="what to capture")
    parser.add_argument("-w", dest="write", metavar="FILE",
                        help="write to FILE ('-': stdout) instead of printing")  # fmt: skip
    parser.add_argument("--filter", default="", metavar="EXPR",
                        help="e.g. 'tcp and port 80', 'host 10.244.2.5', 'not icmp'")  # fmt: skip
    parser.add_argument("-c", "--count", type=int, help="stop after this many packets")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--format", choices=("pcapng", "pcap"), default="pcapng")


def capture_path(client: ApiClient, target: str, namespace: str) -> tuple[str, dict[str, str]]:
    """The proxy path and query for ``node/NAME`` or ``pod/NAME``."""
    kind, _, name = target.partition("/")
    if not name or kind not in ("node", "nodes", "no", "pod", "pods", "po"):
        raise LocalError(f"capture target {target!r}: write node/NAME or pod/NAME")
    if kind.startswith("n"):
        return f"/api/v1/nodes/{name}/proxy/capture", {}
    pod = client.get(resolve_kind("pod"), namespace, name)
    node = pod.get("spec", {}).get("nodeName")
    if not node or not pod.get("status", {}).get("podIP"):
        raise LocalError(f"pod {name} is not running yet; wait until it has an IP")
    if pod.get("spec", {}).get("hostNetwork"):
        raise LocalError(f"pod {name} uses its node's network (hostNetwork): capture "
                         f"node/{node} instead")  # fmt: skip
    return f"/api/v1/nodes/{node}/proxy/capture", {"pod": f"{namespace}/{name}"}


def run(args: argparse.Namespace) -> int:
    client: ApiClient = args.client
    path, query = capture_path(client, args.target, args.namespace or "default")
    query["format"] = args.format
    if args.filter:
        query["filter"] = args.filter
    if args.count is not None:
        query["count"] = str(args.count)
    if args.duration is not None:
        query["duration"] = str(args.duration)
    reader = CaptureReader(keep_packets=args.write is None)
    resp = client._open("GET", path, query, streaming=True)
    with resp:
        if args.write is None:
            _print_packets(resp, reader)
        elif args.write == "-":
            _copy(resp, sys.stdout.buffer, reader)
        else:
            with open(args.write, "wb") as out:
                _copy(resp, out, reader)
    s = reader.summary
    dropped = f", {s.dropped} dropped (reader too slow)" if s.dropped else ""
    print(f"{s.packets} packets captured{dropped}", file=sys.stderr)
    return 0


def _copy(resp: Any, out: IO[bytes], reader: CaptureReader) -> None:
    while chunk := resp.read1(CHUNK_BYTES):
        out.write(chunk)
        out.flush()  # a pipe reader (tshark -r -) sees packets as they come
        reader.feed(chunk)


def _print_packets(resp: Any, reader: CaptureReader) -> None:
    while chunk := resp.read1(CHUNK_BYTES):
        reader.feed(chunk)
        for ts, data, outbound in reader.packets:
            clock = time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 1e6):06d}"
            arrow = {True: "Out", False: "In ", None: "   "}[outbound]
            print(f"{clock} {arrow} {describe_packet(data)}", flush=True)
        reader.packets.clear()
