"""``knemu get KIND [NAME...]``: list objects like ``kubectl get`` (tables, -o, -w).

https://kubernetes.io/docs/reference/kubectl/generated/kubectl_get/ : ``KIND`` may be a
comma-separated list (``pods,svc``) or ``TYPE/NAME`` pairs; one named object printed with
``-o json|yaml|jsonpath`` is the object itself, anything else is a ``v1 List``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field

from knemu.cli.client import ApiClient, Obj, ResourceType, StatusError, resolve_kind
from knemu.cli.output.formats import (
    as_list,
    print_custom_columns,
    print_json,
    print_jsonpath,
    print_names,
    print_yaml,
)
from knemu.cli.output.printers import (
    TableOptions,
    format_table,
    print_table,
    table_headers,
    table_row,
)
from knemu.errors import LocalError

ALL_CATEGORY = ["pods", "services", "deployments", "replicasets"]
OUTPUTS = "wide, yaml, json, name, jsonpath=TEMPLATE, custom-columns=SPEC"


@dataclass
class Fetched:
    rt: ResourceType
    objs: list[Obj] = field(default_factory=list)
    resource_version: str = ""
    named: bool = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", help="pods, svc, deploy, ... or TYPE/NAME")
    parser.add_argument("names", nargs="*", help="object names (default: all)")
    parser.add_argument("-A", "--all-namespaces", action="store_true")
    parser.add_argument("-l", "--selector", default="", help="label selector, e.g. app=web")
    parser.add_argument("--field-selector", default="", help="e.g. spec.nodeName=node-1")
    parser.add_argument("-o", "--output", default="", help=OUTPUTS)
    parser.add_argument("--show-labels", action="store_true")
    parser.add_argument("--no-headers", action="store_true")
    parser.add_argument("-w", "--watch", action="store_true", help="print changes as they happen")
    parser.add_argument(
        "--request-timeout", type=int, default=None, metavar="S", help="end a watch after S seconds"
    )


def targets(kind_arg: str, names: list[str]) -> list[tuple[ResourceType, list[str]]]:
    """``pods`` + names, ``pods,svc``, or ``pod/a svc/b`` -> [(type, names)] in order."""
    if "/" in kind_arg:
        out: dict[str, tuple[ResourceType, list[str]]] = {}
        for item in [kind_arg, *names]:
            kind, sep, name = item.partition("/")
            if not sep or not name:
                raise LocalError(
                    f"there is no need to specify a resource type as a separate "
                    f"argument when passing arguments in TYPE/NAME form: {item!r}"
                )
            rt = resolve_kind(kind)
            out.setdefault(rt.kind, (rt, []))[1].append(name)
        return list(out.values())
    names_given = kind_arg.split(",")
    if "all" in names_given:  # kubectl's "all" category (the workloads and their services)
        i = names_given.index("all")
        names_given[i : i + 1] = ALL_CATEGORY
    kinds = list({rt.kind: rt for rt in (resolve_kind(k) for k in names_given if k)}.values())
    if len(kinds) > 1 and names:
        raise LocalError("names can only be given for one kind; use TYPE/NAME for several kinds")
    return [(rt, list(names)) for rt in kinds]


def _fetch(
    client: ApiClient,
    rt: ResourceType,
    names: list[str],
    args: argparse.Namespace,
    namespace: str | None,
) -> tuple[Fetched, list[str]]:
    fetched = Fetched(rt, named=bool(names))
    errors: list[str] = []
    if not names:
        listed = client.list(rt, namespace, args.selector, args.field_selector)
        fetched.objs = sorted(listed.get("items") or [], key=_sort_key)
        fetched.resource_version = str((listed.get("metadata") or {}).get("resourceVersion", ""))
        return fetched, errors
    for name in names:
        try:
            fetched.objs.append(client.get(rt, namespace, name))
        except StatusError as exc:
            if not exc.not_found:
                raise
            errors.append(f'Error from server (NotFound): {rt.plural} "{name}" not found')
    return fetched, errors


def _sort_key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    if obj.get("kind") == "Event":
        return (str(obj.get("lastTimestamp") or meta.get("creationTimestamp") or ""), "")
    return (str(meta.get("namespace", "")), str(meta.get("name", "")))


def render(results: list[Fetched], output: str, opts: TableOptions, now: float) -> str:
    """All fetched objects in the chosen output format."""
    objs = [o for r in results for o in r.objs]
    single = len(results) == 1 and results[0].named and len(objs) == 1
    doc = objs[0] if single else as_list(objs)
    fmt, _, arg = output.partition("=")
    if fmt == "json":
        return print_json(doc)
    if fmt == "yaml":
        return print_yaml(doc)
    if fmt == "jsonpath":
        return print_jsonpath(arg.strip("'"), doc)
    if fmt == "name":
        return "".join(print_names(r.rt, r.objs) for r in results)
    if fmt == "custom-columns":
        return print_custom_columns(arg, objs, opts.headers)
    if len(results) > 1:
        opts = dataclasses.replace(opts, kind_prefix=True)
    tables = [print_table(r.rt, r.objs, now, opts) for r in results if r.objs]
    return "\n".join(tables)


def _check_output(output: str) -> None:
    fmt, sep, arg = output.partition("=")
    plain = ("", "wide", "json", "yaml", "name")
    templated = ("jsonpath", "custom-columns")
    if (fmt in plain and not sep) or (fmt in templated and arg):
        return
    raise LocalError(
        f"unable to match a printer suitable for the output format {output!r}; "
        f"allowed formats are: {OUTPUTS}"
    )


def run(args: argparse.Namespace) -> int:
    args.output = args.output.removeprefix("=")  # `-o=json`, as kubectl accepts
    _check_output(args.output)
    client: ApiClient = args.client
    namespace = None if args.all_namespaces else (args.namespace or "default")
    opts = TableOptions(
        wide=args.output == "wide",
        all_namespaces=args.all_namespaces,
        show_labels=args.show_labels,
        headers=not args.no_headers,
    )
    results: list[Fetched] = []
    errors: list[str] = []
    for rt, names in targets(args.kind, args.names):
        fetched, errs = _fetch(client, rt, names, args, namespace)
        results.append(fetched)
        errors += errs
    if any(r.objs for r in results) or args.output not in ("", "wide"):
        sys.stdout.write(render(results, args.output, opts, time.time()))
    elif not errors and not args.watch:
        where = f" in {namespace} namespace" if namespace and results[0].rt.namespaced else ""
        print(f"No resources found{where}.", file=sys.stderr)
    for line in errors:
        print(line, file=sys.stderr)
    if args.watch:
        return _watch(client, results, args, namespace, opts)
    return 1 if errors else 0


def _watch(
    client: ApiClient,
    results: list[Fetched],
    args: argparse.Namespace,
    namespace: str | None,
    opts: TableOptions,
) -> int:
    """Print one line per change until the server ends the stream (``--request-timeout``)."""
    if len(results) != 1:
        raise LocalError("--watch works with one kind at a time")
    fetched = results[0]
    rt = fetched.rt
    field_selector = args.field_selector
    if fetched.named:
        field_selector = ",".join(filter(None, [field_selector, f"metadata.name={args.names[0]}"]))
    need_header = not fetched.objs and opts.headers and args.output in ("", "wide")
    for event in client.watch(
        rt,
        namespace,
        fetched.resource_version or "0",
        args.selector,
        field_selector,
        args.request_timeout,
    ):
        obj = event.get("object") or {}
        if event.get("type") == "ERROR":
            raise StatusError.from_body(int(obj.get("code") or 500), json.dumps(obj).encode())
        if args.output in ("", "wide"):
            row = table_row(rt, obj, time.time(), opts)
            headers = table_headers(rt, opts) if need_header else []
            sys.stdout.write(format_table(headers, [row]))
            need_header = False
        else:
            sys.stdout.write(
                render([Fetched(rt, [obj], named=True)], args.output, opts, time.time())
            )
        sys.stdout.flush()
    return 0
