"""``knemu describe KIND NAME``: the human-readable view of ``kubectl describe``.

This module is the command: it finds the objects, picks each kind's describer from
``describe_kinds.DESCRIBERS`` (a YAML dump of the main fields for other kinds) and ends every
object with its events, as kubectl does.  ``describe_layout`` aligns the lines like Go's
tabwriter.
"""

from __future__ import annotations

import argparse
import sys
import time

import yaml

from knemu.cli.client import ApiClient, Obj, ResourceType, StatusError, resolve_kind
from knemu.cli.output.describe_layout import NONE, Writer, header
from knemu.cli.output.describers import DESCRIBERS
from knemu.cli.output.printers import age_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", help="service, pod, node, deployment, ... or TYPE/NAME")
    parser.add_argument("names", nargs="*", help="object names (default: all of that kind)")
    parser.add_argument("-l", "--selector", default="", help="label selector")


def run(args: argparse.Namespace) -> int:
    client: ApiClient = args.client
    kind, _, name = args.kind.partition("/")
    rt = resolve_kind(kind)
    names = ([name] if name else []) + list(args.names)
    namespace = args.namespace or "default"
    missing = []
    if names:
        found = [(n, client.find(rt, namespace, n)) for n in names]
        objs = [obj for _, obj in found if obj is not None]
        missing = [n for n, obj in found if obj is None]
    else:
        objs = list(client.list(rt, namespace, args.selector).get("items") or [])
        if not objs:
            print(f"No resources found in {namespace} namespace.", file=sys.stderr)
    now = time.time()
    texts = [describe(client, rt, obj, now) for obj in objs]
    sys.stdout.write("\n\n".join(t.rstrip("\n") for t in texts) + ("\n" if texts else ""))
    for name in missing:
        print(f'Error from server (NotFound): {rt.plural} "{name}" not found', file=sys.stderr)
    return 1 if missing else 0


def describe(client: ApiClient, rt: ResourceType, obj: Obj, now: float) -> str:
    w = Writer()
    DESCRIBERS.get(rt.kind, _describe_generic)(client, obj, w, now)
    _events(client, obj, w, now)
    return w.render()


def _describe_generic(client: ApiClient, obj: Obj, w: Writer, now: float) -> None:
    header(w, obj, namespaced=bool((obj.get("metadata") or {}).get("namespace")))
    for key in ("spec", "subsets", "endpoints", "ports", "status"):
        if obj.get(key):
            w.line(0, f"{key[0].upper()}{key[1:]}:")
            for text in yaml.safe_dump(obj[key], default_flow_style=False).splitlines():
                w.line(1, text)


def _events(client: ApiClient, obj: Obj, w: Writer, now: float) -> None:
    meta = obj.get("metadata") or {}
    involved = f"involvedObject.kind={obj.get('kind')},involvedObject.name={meta.get('name')}"
    try:
        events = client.list(
            resolve_kind("events"), meta.get("namespace") or "default", field_selector=involved
        ).get("items")
    except StatusError:
        events = None
    if not events:
        w.line(0, "Events:", NONE)
        return
    w.line(0, "Events:")
    w.line(1, "Type", "Reason", "Age", "From", "Message")
    w.line(1, "----", "------", "----", "----", "-------")
    for ev in sorted(events, key=lambda e: str(e.get("lastTimestamp") or "")):
        w.line(
            1,
            ev.get("type", "Normal"),
            ev.get("reason", ""),
            _event_age(ev, now),
            _event_source(ev),
            ev.get("message", ""),
        )


def _event_age(ev: Obj, now: float) -> str:
    last = age_of(ev.get("lastTimestamp") or ev.get("eventTime"), now)
    count = int(ev.get("count") or 1)
    if count > 1 and ev.get("firstTimestamp"):
        return f"{last} (x{count} over {age_of(ev['firstTimestamp'], now)})"
    return last


def _event_source(ev: Obj) -> str:
    source = ev.get("source") or {}
    parts = [source.get("component") or ev.get("reportingComponent") or "", source.get("host")]
    return ", ".join(p for p in parts if p)
