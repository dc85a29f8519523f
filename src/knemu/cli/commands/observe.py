"""``knemu flows`` and ``knemu trace``: what the nodes' routers decided, as Hubble shows it.

Both go through the api-server's node proxy (``/api/v1/nodes/{name}/proxy/...``) to the
agents' HTTP API (docs/INTERFACES.md "Agent HTTP API"): ``/flows`` gives NDJSON flow events,
``/trace`` injects one probe packet from a pod and returns the hops on the pod's node; the
hops on other nodes (decapsulation, delivery, the reply) are then read from their ``/flows``
for the probe's source address and port, and everything is printed in time order.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

from knemu.cli.client import ApiClient, resolve_kind
from knemu.errors import KnemuError, LocalError

Obj = dict[str, Any]


def format_flow(e: Obj) -> str:
    """One line per event: time, node, observation point, verdict, tuple and details."""
    t = time.strftime("%H:%M:%S", time.localtime(e.get("time", 0))) + (
        f".{int((e.get('time', 0) % 1) * 1000):03d}"
    )
    parts = [t, f"{e.get('node', '?'):<8}", f"{e.get('point', '?'):<10}",
             f"{e.get('verdict', '?'):<10}", e.get("summary", "(unparsable packet)")]  # fmt: skip
    translated = e.get("translated")
    if translated:
        parts.append(f"=> {translated['dst_ip']}:{translated['dst_port']}"
                     if e.get("nat") in ("dnat", "unsnat") else
                     f"=> from {translated['src_ip']}:{translated['src_port']}")  # fmt: skip
        parts.append(f"[{e.get('nat')}]")
    if e.get("service"):
        parts.append(f"service {e['service']}")
    outer = e.get("outer")
    if outer and outer.get("encapsulation") in ("ipip", "wireguard"):
        port = f":{outer['dst_port']}" if outer.get("dst_port") else ""
        parts.append(f"outer {outer['src_ip']} -> {outer['dst_ip']}{port} {outer['encapsulation']}")
    elif outer:
        parts.append(f"outer {outer['src_ip']} -> {outer['dst_ip']}:{outer['dst_port']} "
                     f"vni {outer['vni']}")  # fmt: skip
    for key in ("reason", "reply"):
        if e.get(key):
            parts.append(f"{key}={e[key]}")
    return "  ".join(parts)


def node_names(client: ApiClient) -> list[str]:
    body = client.request("GET", "/api/v1/nodes")
    return sorted(n["metadata"]["name"] for n in body.get("items", []))


def proxy_path(node: str, path: str) -> str:
    return f"/api/v1/nodes/{node}/proxy/{path}"


def read_flows(client: ApiClient, node: str, query: dict[str, str]) -> list[Obj]:
    lines = client.stream(proxy_path(node, "flows"), query)
    return [json.loads(line) for line in lines if line.strip()]


# -- knemu flows -----------------------------------------------------------------------------------


def flows_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("node", nargs="?", help="only this node (default: every node)")
    parser.add_argument("-f", "--follow", action="store_true", help="keep streaming")
    parser.add_argument("--ip", help="only flows with this address on either side")
    parser.add_argument("--port", type=int, help="only flows with this port on either side")
    parser.add_argument("--limit", type=int, default=100, help="recent events per node")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")


def flows_run(args: argparse.Namespace) -> int:
    client: ApiClient = args.client
    nodes = [args.node] if args.node else node_names(client)
    query = {"limit": str(args.limit)}
    if args.ip:
        query["ip"] = args.ip
    if args.port is not None:
        query["port"] = str(args.port)
    show = (lambda e: json.dumps(e)) if args.output == "json" else format_flow
    if not args.follow:
        events = [e for n in nodes for e in read_flows(client, n, query)]
        for e in sorted(events, key=lambda e: e.get("time", 0)):
            print(show(e))
        return 0
    follow_nodes(client, nodes, {**query, "follow": "true"}, show)
    return 0


def follow_nodes(client: ApiClient, nodes: list[str], query: dict[str, str], show: Any) -> None:
    """One reader thread per node (the REST client is blocking); Ctrl-C ends it."""
    lock = threading.Lock()

    def reader(node: str) -> None:
        try:
            for line in client.stream(proxy_path(node, "flows"), query):
                if line.strip():
                    with lock:
                        print(show(json.loads(line)), flush=True)
        except Exception as exc:  # one node failing must not stop the others
            with lock:
                print(f"error: flows from {node}: {exc}", file=sys.stderr)

    threads = [threading.Thread(target=reader, args=(n,), daemon=True) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.5)


# -- knemu trace ------------------------------------------------------------------------------


def trace_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SRC_POD", help="pod to send the probe from")
    parser.add_argument("destination", metavar="DST",
                        help="IPv4 address, pod/NAME, svc/NAME or a service name")  # fmt: skip
    parser.add_argument("--port", type=int, default=0, help="destination port")
    parser.add_argument("--protocol", choices=("TCP", "UDP", "ICMP"), type=str.upper)
    parser.add_argument("-n", "--namespace", default="default")
    parser.add_argument("--wait-ms", type=int, default=500, help="how long to collect hops")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")


def resolve_destination(client: ApiClient, namespace: str, dst: str) -> str:
    """An IPv4 address as is; pod/NAME -> its IP; svc/NAME or NAME -> the ClusterIP."""
    try:
        return str(ipaddress.IPv4Address(dst))
    except ValueError:
        pass
    kind, _, name = dst.rpartition("/")
    rt = resolve_kind(kind or "service")
    obj = client.get(rt, namespace, name)
    ip = obj.get("status", {}).get("podIP") if rt.kind == "Pod" else obj["spec"].get("clusterIP")
    if not ip or ip == "None":
        raise LocalError(f"{rt.singular} {name} has no IP to trace to (pending pod or headless "
                         "service); trace to a pod IP instead")  # fmt: skip
    return str(ip)


def trace_run(args: argparse.Namespace) -> int:
    client: ApiClient = args.client
    pod = client.get(resolve_kind("pod"), args.namespace, args.source)
    node = pod.get("spec", {}).get("nodeName")
    if not node or not pod.get("status", {}).get("podIP"):
        raise LocalError(f"pod {args.source} is not running yet; wait until it has an IP")
    dst = resolve_destination(client, args.namespace, args.destination)
    protocol = args.protocol or ("TCP" if args.port else "ICMP")
    body = {"pod": f"{args.namespace}/{args.source}", "dst": dst, "port": args.port,
            "protocol": protocol, "wait_ms": args.wait_ms}  # fmt: skip
    # Forwarded packets are recorded only while someone watches: arm every other node so its
    # hops of the probe are in its history when we read it below.
    others = [n for n in node_names(client) if n != node]
    for other in others:
        with contextlib.suppress(KnemuError):  # a node that is down just shows no hops
            client.request("POST", proxy_path(other, "flows/record"), {"seconds": "10"})
    result = client.request("POST", proxy_path(node, "trace"), body=body)
    hops = list(result.get("hops", []))
    probe = result["probe"]
    query = {"since": str(result["time"] - 0.001), "ip": probe["src_ip"], "limit": "200"}
    if protocol != "ICMP":
        query["port"] = str(probe["src_port"])
    for other in others:
        hops += read_flows(client, other, query)
    hops.sort(key=lambda e: e.get("time", 0))
    if args.output == "json":
        print(json.dumps({"probe": probe, "hops": hops}, indent=2))
        return 0
    print_trace(probe, node, hops)
    return 0 if hops else 1


def print_trace(probe: Obj, node: str, hops: Iterable[Obj]) -> None:
    print(f"trace {probe['protocol']} {probe['pod']} ({probe['src_ip']}:{probe['src_port']}) "
          f"-> {probe['dst_ip']}:{probe['dst_port']} from {node}")  # fmt: skip
    n = 0
    for n, hop in enumerate(hops, 1):
        print(f"{n:>3}  {format_flow(hop)}")
    if n == 0:
        print("  no hops seen: the probe was not routed (is the pod attached to its node?)")
