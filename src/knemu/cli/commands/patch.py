"""``knemu patch`` and ``knemu scale``, as kubectl does them.

``kubectl patch TYPE NAME -p PATCH [--type strategic|merge|json]`` sends the patch as is; the
api-server applies it (strategic merge by default: lists such as containers and ports merge on
their keys).  It prints ``service/x patched``, or ``patched (no change)`` when the object's
resourceVersion did not move
(https://kubernetes.io/docs/reference/kubectl/generated/kubectl_patch/).

``kubectl scale TYPE NAME --replicas N [--current-replicas M]`` patches the ``scale``
subresource and prints ``deployment.apps/x scaled``; ``--current-replicas`` is a precondition
(https://kubernetes.io/docs/reference/kubectl/generated/kubectl_scale/).
"""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from knemu.cli.client import PATCH_TYPES, ApiClient, ResourceType
from knemu.cli.commands.get import targets
from knemu.errors import LocalError

SCALABLE = ("Deployment", "ReplicaSet")


def patch_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", help="pods, svc, ... or TYPE/NAME")
    parser.add_argument("names", nargs="*", help="object names")
    parser.add_argument("-p", "--patch", required=True, help="the patch, JSON or YAML")
    parser.add_argument(
        "--type", choices=tuple(PATCH_TYPES), default="strategic", help="patch type"
    )


def _one_target(kind: str, names: list[str], verb: str) -> list[tuple[ResourceType, str]]:
    out = [(rt, n) for rt, ns in targets(kind, names) for n in ns]
    if not out:
        raise LocalError(f"say which object to {verb}: knemu {verb} TYPE NAME or TYPE/NAME")
    return out


def _decode_patch(text: str, patch_type: str) -> Any:
    try:
        body = yaml.safe_load(text)  # JSON is YAML, and kubectl accepts both
    except yaml.YAMLError as exc:
        raise LocalError(f"the patch is neither JSON nor YAML: {exc}") from None
    expected = list if patch_type == "json" else dict
    if not isinstance(body, expected):
        shape = "a list of operations" if patch_type == "json" else "an object"
        raise LocalError(f"a {patch_type} patch must be {shape}, got: {text!r}")
    return body


def patch_run(args: argparse.Namespace) -> int:
    client: ApiClient = args.client
    body = _decode_patch(args.patch, args.type)
    ns = args.namespace or "default"
    for rt, name in _one_target(args.kind, args.names, "patch"):
        before = client.get(rt, ns, name)["metadata"].get("resourceVersion")
        after = client.patch(rt, ns, name, body, args.type)["metadata"].get("resourceVersion")
        suffix = " (no change)" if before == after else ""
        print(f"{rt.qualified}/{name} patched{suffix}")
    return 0


def scale_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", help="deployment, replicaset or TYPE/NAME")
    parser.add_argument("names", nargs="*", help="object names")
    parser.add_argument("--replicas", type=int, required=True, help="the new number of replicas")
    parser.add_argument(
        "--current-replicas",
        type=int,
        default=-1,
        help="only scale when the current number of replicas is this",
    )


def scale_run(args: argparse.Namespace) -> int:
    client: ApiClient = args.client
    if args.replicas < 0:
        raise LocalError(f"--replicas={args.replicas}: the number of replicas must be >= 0")
    ns = args.namespace or "default"
    for rt, name in _one_target(args.kind, args.names, "scale"):
        if rt.kind not in SCALABLE:
            raise LocalError(f"{rt.plural} cannot be scaled: scale a deployment or replicaset")
        path = rt.object_path(ns, name) + "/scale"
        body: dict[str, Any] = {"spec": {"replicas": args.replicas}}
        if args.current_replicas >= 0:
            current = client.request("GET", path).get("spec", {}).get("replicas", 0)
            if current != args.current_replicas:
                raise LocalError(
                    f"expected replicas to be {args.current_replicas}, was {current}: "
                    f"{rt.qualified}/{name} not scaled"
                )
        client.request("PATCH", path, None, body, PATCH_TYPES["merge"])
        print(f"{rt.qualified}/{name} scaled")
    return 0
