"""``knemu delete -f FILE | KIND NAME... | KIND -l SEL | KIND --all``, printing like kubectl.

kubectl prints ``pod "x" deleted`` for each object
(https://kubernetes.io/docs/reference/kubectl/generated/kubectl_delete/); a missing object is
``Error from server (NotFound): pods "x" not found`` unless ``--ignore-not-found``.
"""

from __future__ import annotations

import argparse
import sys

from knemu.cli.client import ApiClient, ResourceType, StatusError, resource_for
from knemu.cli.commands.get import targets
from knemu.cli.manifests import load_paths
from knemu.errors import LocalError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", nargs="?", help="pods, svc, ... or TYPE/NAME")
    parser.add_argument("names", nargs="*", help="object names")
    parser.add_argument(
        "-f",
        "--filename",
        action="append",
        default=[],
        metavar="FILE",
        help="delete what these manifests describe",
    )
    parser.add_argument("-l", "--selector", default="", help="delete objects with these labels")
    parser.add_argument("--all", action="store_true", help="delete every object of the kind")
    parser.add_argument("--ignore-not-found", action="store_true")


def _from_files(args: argparse.Namespace) -> list[tuple[ResourceType, str | None, str]]:
    out = []
    for doc in load_paths(args.filename):
        meta = doc.obj.get("metadata") or {}
        rt = resource_for(str(doc.obj.get("apiVersion")), str(doc.obj.get("kind")))
        ns = (meta.get("namespace") or args.namespace or "default") if rt.namespaced else None
        out.append((rt, ns, str(meta.get("name", ""))))
    return out


def _from_args(
    client: ApiClient, args: argparse.Namespace
) -> list[tuple[ResourceType, str | None, str]]:
    if not args.kind:
        raise LocalError(
            "say what to delete: -f FILE, KIND NAME..., KIND -l SELECTOR or KIND --all"
        )
    ns = args.namespace or "default"
    out: list[tuple[ResourceType, str | None, str]] = []
    for rt, names in targets(args.kind, args.names):
        if names:
            out += [(rt, ns, n) for n in names]
        elif args.selector or args.all:
            listed = client.list(rt, ns, args.selector).get("items") or []
            out += [(rt, ns, str(o["metadata"]["name"])) for o in listed]
        else:
            raise LocalError(
                f"resource(s) were provided, but no name was specified: "
                f"knemu delete {rt.plural} NAME, -l SELECTOR or --all"
            )
    return out


def run(args: argparse.Namespace) -> int:
    client: ApiClient = args.client
    victims = _from_files(args) if args.filename else _from_args(client, args)
    if not victims and (args.selector or args.all):
        print("No resources found", file=sys.stderr)
    failed = False
    for rt, ns, name in victims:
        try:
            client.delete(rt, ns, name)
        except StatusError as exc:
            if not exc.not_found:
                raise
            if not args.ignore_not_found:
                print(
                    f'Error from server (NotFound): {rt.plural} "{name}" not found', file=sys.stderr
                )
                failed = True
            continue
        print(f'{rt.singular} "{name}" deleted')
    return 1 if failed else 0
