"""``knemu apply -f``: create objects, or merge changes into existing ones, all or nothing.

Merging follows client-side ``kubectl apply``
(https://kubernetes.io/docs/tasks/manage-kubernetes-objects/declarative-config/): the manifest
last applied is kept in the ``kubectl.kubernetes.io/last-applied-configuration`` annotation;
a field in the new manifest sets the live value, a field that was in the last-applied manifest
but is gone from the new one is removed, and every other live field (``spec.clusterIP``,
``nodePort``, defaults, ``status``) is kept.  Lists of containers, ports and env vars merge
element-wise on their strategic-merge keys, so a service keeps its allocated nodePorts.  The
result is PUT with the live ``resourceVersion`` (a Conflict re-reads and retries).

Atomicity: every document is first sent with ``?dryRun=All``; only if all pass is anything
applied, so a bad document in a multi-document file leaves the cluster unchanged.

Several documents may name the same object (seed 002's directory holds three versions of one
Service).  kubectl applies documents one after another, so the last one wins; here each such
document is checked as the step it is in that sequence (its manifest merged, in order, over the
earlier ones and the live object), and only the final step is written, once, at the place of
the object's first document (so a namespace still exists before the objects in it).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import dataclass, field
from typing import Any

from knemu.cli.client import ApiClient, Obj, ResourceType, StatusError, resource_for
from knemu.cli.manifests import LAST_APPLIED, Document, load_paths
from knemu.errors import KnemuError, LocalError

CONFLICT_RETRIES = 3
_ERROR_SEP = "\nerror: "  # the CLI prints "error: " before the first line

# Strategic-merge keys of the list fields the supported kinds have (k8s.io/api core/v1 types,
# `patchMergeKey`); "ports" is keyed by containerPort in containers and by port in services.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
}


class ApplyFailed(LocalError):
    """One or more documents were rejected; the message lists every one of them."""


@dataclass
class Planned:
    doc: Document
    rt: ResourceType
    namespace: str | None
    desired: Obj  # the manifest, normalised, with its last-applied annotation
    earlier: list[Planned] = field(default_factory=list)  # documents naming it before this one
    live: Obj | None = None
    skip_dry_run: bool = False  # its namespace is created by an earlier document

    @property
    def name(self) -> str:
        return str(self.desired["metadata"].get("name", ""))

    @property
    def key(self) -> tuple[str, str | None, str]:
        return (self.rt.kind, self.namespace, self.name)

    def target(self, live: Obj | None) -> Obj:
        """The object after applying, in order, the earlier documents and then this one onto
        ``live`` (None: it does not exist yet) as kubectl would, one apply per document."""
        state = live
        for manifest in [*(p.desired for p in self.earlier), self.desired]:
            state = copy.deepcopy(manifest) if state is None else merged_object(state, manifest)
        assert state is not None
        return state


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="FILE",
        help="manifest file, directory or - for stdin (repeatable)",
    )
    parser.add_argument(
        "--dry-run",
        choices=("none", "server"),
        default="none",
        help="server: validate every document on the server, change nothing",
    )


def run(args: argparse.Namespace) -> int:
    client: ApiClient = args.client
    plans: list[Planned] = []
    errors: list[str] = []
    for doc in load_paths(args.filename):
        try:
            plans.append(_plan(doc, args.namespace))
        except KnemuError as exc:
            errors.append(_doc_error(doc, exc.message))
    _chain(plans)
    errors += _dry_run(client, plans)
    if errors:
        raise ApplyFailed(_ERROR_SEP.join([*errors, "nothing was applied"]))
    suffix = " (server dry run)" if args.dry_run == "server" else ""
    for plan in _final_steps(plans):
        if plan.earlier:
            _note_repeated(plan)
        action = _action(plan) if suffix else _apply_one(client, plan)
        print(f"{plan.rt.qualified}/{plan.name} {action}{suffix}")
    return 0


# -- planning ---------------------------------------------------------------------------------


def _plan(doc: Document, ns_flag: str | None) -> Planned:
    obj = doc.obj
    _require(obj)
    rt = resource_for(str(obj["apiVersion"]), str(obj["kind"]))
    namespace = _namespace(rt, obj, ns_flag)
    return Planned(doc, rt, namespace, _desired(obj, namespace))


def _chain(plans: list[Planned]) -> None:
    """Give each document the earlier documents that name the same object, in order."""
    previous: dict[tuple[str, str | None, str], Planned] = {}
    for plan in plans:
        before = previous.get(plan.key)
        if before is not None:
            plan.earlier = [*before.earlier, before]
        previous[plan.key] = plan


def _final_steps(plans: list[Planned]) -> list[Planned]:
    """The last document of each object, placed where its first document is."""
    last = {plan.key: plan for plan in plans}
    return [last[plan.key] for plan in plans if not plan.earlier]


def _note_repeated(plan: Planned) -> None:
    where = ", ".join(f"{p.doc.source} document {p.doc.index}" for p in [*plan.earlier, plan])
    print(
        f"{plan.rt.qualified}/{plan.name}: named by {where}; applied in that order, as kubectl "
        "does: the last one wins",
        file=sys.stderr,
    )


def _require(obj: Obj) -> None:
    missing = [k for k in ("apiVersion", "kind") if not obj.get(k)]
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name"):
        missing.append("metadata.name")
    if missing:
        raise LocalError(f"{', '.join(missing)}: Required value")


def _namespace(rt: ResourceType, obj: Obj, ns_flag: str | None) -> str | None:
    if not rt.namespaced:
        return None
    own = obj["metadata"].get("namespace")
    if own and ns_flag and own != ns_flag:
        raise LocalError(
            f'the namespace from the provided object "{own}" does not match the namespace '
            f'"{ns_flag}"; pass --namespace={own} or remove metadata.namespace'
        )
    return str(own or ns_flag or "default")


def _desired(obj: Obj, namespace: str | None) -> Obj:
    """The manifest as sent: status dropped, namespace set, last-applied recorded."""
    body = {k: copy.deepcopy(v) for k, v in obj.items() if k != "status"}
    meta = body["metadata"]
    if namespace is not None:
        meta["namespace"] = namespace
    annotations = dict(meta.get("annotations") or {})
    annotations.pop(LAST_APPLIED, None)
    meta["annotations"] = annotations
    recorded = copy.deepcopy(body)
    if not annotations:
        del recorded["metadata"]["annotations"]
    annotations[LAST_APPLIED] = json.dumps(recorded, sort_keys=True, separators=(",", ":")) + "\n"
    return body


# -- merge ------------------------------------------------------------------------------------


def merge(live: Any, last: Any, desired: Any, key: str = "") -> Any:
    """Three-way merge of one value: desired wins, fields dropped since ``last`` are removed."""
    if isinstance(desired, dict) and isinstance(live, dict):
        last_map = last if isinstance(last, dict) else {}
        out = {k: v for k, v in live.items() if k in desired or k not in last_map}
        for k, v in desired.items():
            out[k] = merge(live.get(k), last_map.get(k), v, k)
        return out
    if isinstance(desired, list) and isinstance(live, list):
        merge_key = _list_merge_key(key, desired)
        if merge_key:
            return _merge_list(live, last if isinstance(last, list) else [], desired, merge_key)
    return copy.deepcopy(desired)


def _list_merge_key(field: str, desired: list[Any]) -> str | None:
    if not desired or not all(isinstance(d, dict) for d in desired):
        return None
    if field == "ports":
        return "containerPort" if "containerPort" in desired[0] else "port"
    return _MERGE_KEYS.get(field)


def _merge_list(live: list[Any], last: list[Any], desired: list[Any], merge_key: str) -> list[Any]:
    def by_key(items: list[Any]) -> dict[Any, Any]:
        return {i.get(merge_key): i for i in items if isinstance(i, dict)}

    live_map, last_map = by_key(live), by_key(last)
    return [
        merge(live_map.get(d.get(merge_key)), last_map.get(d.get(merge_key)), d) for d in desired
    ]


def merged_object(live: Obj, desired: Obj) -> Obj:
    """The object to PUT: live merged with the manifest, keeping live status and identity."""
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    try:
        last = json.loads(annotations.get(LAST_APPLIED, "{}"))
    except ValueError:
        last = {}
    out: Obj = merge(live, last, desired)
    if "resourceVersion" in live["metadata"]:  # not in an earlier manifest of the same object
        out["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
    if "status" in live:
        out["status"] = live["status"]
    return out


# -- dry run and apply ------------------------------------------------------------------------


def _dry_run(client: ApiClient, plans: list[Planned]) -> list[str]:
    errors: list[str] = []
    new_namespaces: set[str] = set()
    for plan in plans:
        if plan.namespace in new_namespaces:
            plan.skip_dry_run = True  # cannot exist yet; the server checks it when applied
            continue
        try:
            plan.live = client.find(plan.rt, plan.namespace, plan.name)
            if plan.rt.kind == "Namespace" and plan.live is None:
                new_namespaces.add(plan.name)
            _send(client, plan, dry_run=True)
        except StatusError as exc:
            errors += _status_errors(plan.doc, exc)
    return errors


def _action(plan: Planned) -> str:
    if plan.live is None:
        return "created"
    return "unchanged" if plan.target(plan.live) == plan.live else "configured"


def _send(client: ApiClient, plan: Planned, dry_run: bool) -> str:
    action = _action(plan)
    if action == "created":
        client.create(plan.rt, plan.namespace, plan.target(None), dry_run=dry_run)
    elif action == "configured":
        client.replace(plan.rt, plan.namespace, plan.target(plan.live), dry_run)
    return action


def _apply_one(client: ApiClient, plan: Planned) -> str:
    for _ in range(CONFLICT_RETRIES):
        try:
            if plan.skip_dry_run:
                plan.live = client.find(plan.rt, plan.namespace, plan.name)
            return _send(client, plan, dry_run=False)
        except StatusError as exc:
            if exc.code != 409:
                # Passed the dry run but failed now (the cluster changed meanwhile).
                lines = _status_errors(plan.doc, exc)
                raise ApplyFailed(
                    _ERROR_SEP.join([*lines, "documents before it were applied"])
                ) from None
            # Conflict (changed since read) or AlreadyExists (created since): read again.
            plan.live = client.find(plan.rt, plan.namespace, plan.name)
            plan.skip_dry_run = False
    raise ApplyFailed(_doc_error(plan.doc, f"still conflicting after {CONFLICT_RETRIES} tries"))


def _doc_error(doc: Document, message: str) -> str:
    return f"{doc.source}: document {doc.index} ({doc.label}): {message}"


def _status_errors(doc: Document, exc: StatusError) -> list[str]:
    causes = [c for c in exc.causes if c.get("field") or c.get("message")]
    if not causes:
        return [_doc_error(doc, f"{exc.status_reason}: {exc.status_message}")]
    return [_doc_error(doc, f"{c.get('field', '')}: {c.get('message', '')}") for c in causes]
