"""Request paths and selectors: which resource a URL names, and which objects a query selects.

Paths follow "Kubernetes API Concepts" (https://kubernetes.io/docs/reference/using-api/
api-concepts/#resource-uris): ``/api/v1/{plural}[/{name}[/{subresource}]]`` and the same under
``namespaces/{ns}/`` and ``/apis/{group}/{version}``.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from knemu.apiserver.meta import labels
from knemu.apiserver.rest import resources
from knemu.apiserver.rest.bodies import decode_object
from knemu.apiserver.rest.resources import Resource
from knemu.apiserver.rest.selectors import fields_match, parse_field_selector
from knemu.apiserver.rest.status import BadRequest, Obj
from knemu.apiserver.rest.watch import WatchFilter
from knemu.errors import NotFound


@dataclass(frozen=True)
class Target:
    """What a request path names: a collection, an object, or an object's subresource."""

    res: Resource
    namespace: str | None  # None: all namespaces (or a cluster-scoped resource)
    name: str = ""
    sub: str = ""


def parse_target(group_version: str, tail: str) -> Target:
    """Split the path after ``/api/v1/`` or ``/apis/{g}/{v}/`` into a Target."""
    segs = [s for s in tail.split("/") if s]
    namespace: str | None = None
    if len(segs) >= 3 and segs[0] == "namespaces" and segs[2] not in ("status", "finalize"):
        namespace, segs = segs[1], segs[2:]
    if not segs or len(segs) > 3:
        raise NotFound(f"the server could not find the requested resource /{tail}")
    res = resources.find(group_version, segs[0])
    if res is None:
        raise NotFound(
            f'the server does not serve resource "{segs[0]}" in {group_version}; see '
            f"GET /api/v1 and /apis for what it serves"
        )
    if namespace is not None and not res.namespaced:
        raise NotFound(
            f"{res.plural} are cluster-scoped: drop /namespaces/{namespace} from the path"
        )
    name = segs[1] if len(segs) > 1 else ""
    sub = segs[2] if len(segs) > 2 else ""
    if sub and sub not in res.subresources:
        raise NotFound(f'{res.plural} have no subresource "{sub}"')
    return Target(res, namespace if res.namespaced else "", name, sub)


def watch_filter(request: web.Request, t: Target) -> WatchFilter:
    """The namespace, label and field selectors of a list or watch request."""
    try:
        selector = labels.parse_selector(request.query.get("labelSelector", ""))
    except ValueError as exc:
        raise BadRequest(f"labelSelector: {exc}") from None
    fields = parse_field_selector(request.query.get("fieldSelector", ""))
    if t.name:  # a watch on one object
        fields.extend(parse_field_selector(f"metadata.name={t.name}"))
    return WatchFilter(
        namespace=t.namespace or None,
        label_match=lambda obj: labels.matches(selector, obj.get("metadata", {}).get("labels")),
        field_match=lambda obj: fields_match(fields, obj),
    )


async def delete_options(request: web.Request) -> Obj:
    """DeleteOptions from the body and the query (the query wins, as in Kubernetes)."""
    raw = await request.read()
    options = decode_object(raw, request.content_type) if raw.strip() else {}
    if "propagationPolicy" in request.query:
        options["propagationPolicy"] = request.query["propagationPolicy"]
    if "dryRun" in request.query:
        options["dryRun"] = request.query.getall("dryRun")
    if not isinstance(options.get("dryRun", []), list):
        raise BadRequest('DeleteOptions.dryRun must be a list, e.g. ["All"]')
    return options
