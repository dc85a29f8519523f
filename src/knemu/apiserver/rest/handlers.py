"""REST API on Kubernetes paths (aiohttp): get, list, watch, create, replace, patch, delete.

Follows "Kubernetes API Concepts" (https://kubernetes.io/docs/reference/using-api/
api-concepts/): resources live under ``/api/v1`` (core) and ``/apis/{group}/{version}``,
namespaced ones under ``.../namespaces/{ns}/{plural}``; errors are ``Status`` objects; lists
carry the store's resourceVersion so a client can watch from it (``rest.watch``).

Writes go through admission (normalise, default, validate, allocate) before the store.  The
``status`` subresource follows the upstream split: a write to the main resource keeps the
stored status, a write to ``/status`` changes only the status.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from knemu.apiserver.meta.naming import rfc3339
from knemu.apiserver.rest import resources, reviews, ssa, tables
from knemu.apiserver.rest.access import Access
from knemu.apiserver.rest.bodies import (
    check_preconditions,
    decode_object,
    object_list,
    scale_of,
    selector_text,
)
from knemu.apiserver.rest.limits import body_too_large
from knemu.apiserver.rest.metrics import MetricsApi
from knemu.apiserver.rest.openapi import http as openapi_http
from knemu.apiserver.rest.patches import APPLY_PATCH, apply_patch
from knemu.apiserver.rest.paths import Target, delete_options, parse_target, watch_filter
from knemu.apiserver.rest.selectors import paginate
from knemu.apiserver.rest.status import (
    BadRequest,
    MethodNotAllowed,
    Obj,
    status_failure,
    status_success,
)
from knemu.apiserver.rest.watch import serve_watch
from knemu.apiserver.storage.store import Store
from knemu.apiserver.storage.watch_hub import WatchHub
from knemu.apiserver.storage.watch_quota import WatchQuota
from knemu.apiserver.validation import shapes
from knemu.errors import AlreadyExists, FieldError, Invalid, KnemuError, LocalError, NotFound

log = logging.getLogger(__name__)

# Kubernetes refuses to delete these namespaces (apiserver's namespace lifecycle admission).
PROTECTED_NAMESPACES = frozenset({"default", "kube-system", "kube-public"})
MAX_CASCADE_IN_REQUEST = 100  # dependents of one owner deleted by the request itself
SCALE_SHAPE = {"metadata": shapes.OBJECT_META, "spec": {"replicas": "int32"}}
_OWNER_KINDS = frozenset(
    {"Deployment", "ReplicaSet", "DaemonSet", "Service"}
)  # what owns objects in knemu


class Forbidden(LocalError):
    http_status = 403
    reason = "Forbidden"
    grpc_code = "PERMISSION_DENIED"


class Admitter(Protocol):
    """What the REST layer needs from ``knemu.apiserver.admission.pipeline.Admission``."""

    def admit_create(self, obj: Obj, now: float) -> Obj: ...

    def admit_update(self, old: Obj, new: Obj, now: float) -> Obj: ...


# The APIResource verb of a request on the main resource (subresources have their own).
_VERBS = {
    ("collection", "GET"): "list",
    ("collection", "POST"): "create",
    ("collection", "DELETE"): "deletecollection",
    ("object", "GET"): "get",
    ("object", "PUT"): "update",
    ("object", "PATCH"): "patch",
    ("object", "DELETE"): "delete",
}


def _dry_run(request: web.Request) -> bool:
    return "All" in request.query.getall("dryRun", [])


def _json(body: Obj, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda v: json.dumps(v))


def _selector_of(obj: Obj) -> str:
    return selector_text(obj.get("spec", {}).get("selector", {}).get("matchLabels"))


class RestApi:
    """The REST surface over one store; ``app()`` builds the aiohttp application."""

    def __init__(
        self,
        store: Store,
        hub: WatchHub,
        admission: Admitter,
        access: Access,
        clock: Callable[[], float] = time.time,
        watch_check_s: float = 5.0,
    ) -> None:
        self.store = store
        self.access = access
        self.hub = hub
        self.admission = admission
        self.clock = clock
        self.watch_check_s = watch_check_s
        self.watches = WatchQuota()
        Handler = Callable[[web.Request, Target], Awaitable[web.StreamResponse]]
        self._handlers: dict[tuple[str, str], Handler] = {
            ("collection", "GET"): self._list,
            ("collection", "POST"): self._create,
            ("collection", "DELETE"): self._delete_collection,
            ("object", "GET"): self._get,
            ("object", "PUT"): self._replace,
            ("object", "PATCH"): self._patch,
            ("object", "DELETE"): self._delete,
            ("status", "GET"): self._get,
            ("status", "PUT"): self._replace,
            ("status", "PATCH"): self._patch,
            ("scale", "GET"): self._get_scale,
            ("scale", "PUT"): self._update_scale,
            ("scale", "PATCH"): self._update_scale,
        }

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api", self._api_versions)
        app.router.add_get("/api/v1", self._discovery)
        app.router.add_get("/apis", self._group_list)
        app.router.add_get("/apis/{group}", self._group)
        app.router.add_get("/apis/{group}/{version}", self._discovery)
        app.router.add_get("/version", self._version)
        for path in ("/healthz", "/readyz", "/livez"):
            app.router.add_get(path, self._health)
        openapi_http.add_routes(app)
        reviews.add_routes(app, lambda: self.access.policy)
        MetricsApi(self.store).add_routes(app)
        app.router.add_route("*", "/api/{version}/{tail:.+}", self._dispatch)
        app.router.add_route("*", "/apis/{group}/{version}/{tail:.+}", self._dispatch)

    # ---- dispatch and errors ---------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        group_version = f"{info['group']}/{info['version']}" if "group" in info else info["version"]
        target: Target | None = None
        try:
            target = parse_target(group_version, info["tail"])
            shape = target.sub or ("object" if target.name else "collection")
            handler = self._handlers.get((shape, request.method))
            verb = _VERBS.get((shape, request.method))
            if verb is not None and verb not in target.res.verbs:
                handler = None  # e.g. a write to the metrics API or to a review
            if handler is None:
                raise MethodNotAllowed(
                    f"{request.method} is not supported on {request.path}; see the verbs in "
                    f"GET /{'api' if group_version == 'v1' else 'apis'}/{group_version}"
                )
            return await handler(request, target)
        except web.HTTPRequestEntityTooLarge:
            too_large = body_too_large()
            return _json(status_failure(too_large), too_large.http_status)
        except KnemuError as err:
            kind = target.res.plural if target else ""
            return _json(status_failure(err, kind, target.name if target else ""), err.http_status)
        except Exception as exc:  # a bug: answer with a Status, keep serving, log the trace
            log.exception("%s %s failed", request.method, request.path)
            bug = KnemuError(f"internal error on {request.method} {request.path}: {exc!r}")
            return _json(status_failure(bug), 500)

    async def _version(self, request: web.Request) -> web.Response:
        return _json(resources.VERSION_INFO)

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _api_versions(self, request: web.Request) -> web.Response:
        return _json(resources.core_versions(request.host))

    async def _group_list(self, request: web.Request) -> web.Response:
        return _json(resources.group_list())

    async def _group(self, request: web.Request) -> web.Response:
        doc = resources.group_document(request.match_info["group"])
        if doc is None:
            return _not_served(request)
        return _json(doc)

    async def _discovery(self, request: web.Request) -> web.Response:
        info = request.match_info
        gv = f"{info['group']}/{info['version']}" if "group" in info else "v1"
        doc = resources.resource_list(gv)
        if doc is None:
            return _not_served(request)
        return _json(doc)

    # ---- reads -----------------------------------------------------------------------------

    def _lookup(self, t: Target) -> Obj:
        obj = self.store.get(t.res.kind, t.namespace or "", t.name)
        if obj is None:
            where = f" in namespace {t.namespace!r}" if t.namespace else ""
            raise NotFound(f'{t.res.plural} "{t.name}" not found{where}')
        return obj

    async def _get(self, request: web.Request, t: Target) -> web.StreamResponse:
        if request.query.get("watch") in ("true", "1") and not t.sub:
            return await self._list(request, t)
        return _json(self._as_table(request, t, [self._lookup(t)]) or self._lookup(t))

    def _as_table(self, request: web.Request, t: Target, items: list[Obj]) -> Obj | None:
        """The objects as a meta.k8s.io Table when the client asks for one (tables.py)."""
        version = tables.requested_version(request.headers.get("Accept", ""))
        if version is None or t.sub:
            return None
        include = request.query.get("includeObject", "PartialObjectMetadata")
        return tables.table(t.res.kind, items, self.clock(), version=version,
                            include_object=include)  # fmt: skip

    def _selected(self, request: web.Request, t: Target) -> list[Obj]:
        filt = watch_filter(request, t)
        items = self.store.list(t.res.kind, t.namespace or None)
        return [o for o in items if filt.matches(o)]

    async def _list(self, request: web.Request, t: Target) -> web.StreamResponse:
        if request.query.get("watch") in ("true", "1"):
            client = request.remote or "?"
            self.watches.acquire(client)
            try:
                return await serve_watch(
                    request,
                    self.hub,
                    t.res.kind,
                    t.res.group_version,
                    watch_filter(request, t),
                    self.watch_check_s,
                    tables.watch_transform(
                        request.headers.get("Accept", ""), request.query, self.clock
                    ),
                )
            finally:
                self.watches.release(client)
        query = request.query
        items, extra = paginate(
            self._selected(request, t), query.get("limit", ""), query.get("continue", "")
        )
        body = object_list(t.res.group_version, t.res.list_kind, items, self.store.resource_version)
        body["metadata"].update(extra)
        table = self._as_table(request, t, items)
        if table is not None:
            table["metadata"] = body["metadata"]
        return _json(table or body)

    # ---- writes ----------------------------------------------------------------------------

    async def _body(self, request: web.Request, t: Target) -> Obj:
        obj = decode_object(await request.read(), request.content_type)
        kind = obj.setdefault("kind", t.res.kind)
        if kind != t.res.kind:
            raise BadRequest(
                f"the body is a {kind} but the path is for {t.res.plural} ({t.res.kind}); "
                "send it to the matching path"
            )
        obj.setdefault("apiVersion", t.res.group_version)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise BadRequest("metadata must be a JSON object")
        self._check_identity(meta, t)
        return obj

    @staticmethod
    def _check_identity(meta: Obj, t: Target) -> None:
        if t.res.namespaced:
            ns = meta.get("namespace") or t.namespace
            if t.namespace and ns != t.namespace:
                raise BadRequest(
                    f"the namespace of the object ({ns}) does not match the namespace of the "
                    f"request ({t.namespace}): make them the same"
                )
            meta["namespace"] = ns or "default"
        if t.name and meta.get("name", t.name) != t.name:
            raise BadRequest(
                f"the name of the object ({meta.get('name')}) does not match the name in the "
                f"URL ({t.name}): renaming is not possible, create a new object instead"
            )
        if t.name:
            meta["name"] = t.name

    async def _create(self, request: web.Request, t: Target) -> web.Response:
        obj = await self._body(request, t)
        return self._do_create(request, t, obj)

    def _do_create(self, request: web.Request, t: Target, obj: Obj) -> web.Response:
        now = self.clock()
        admitted = self.admission.admit_create(obj, now)
        self.access.check_escalation(request, admitted)
        if _dry_run(request):
            name = admitted.get("metadata", {}).get("name", "")
            if name and self.store.get(t.res.kind, t.namespace or "", name) is not None:
                raise AlreadyExists(f'{t.res.plural} "{name}" already exists')
            return _json(admitted, 201)
        return _json(self.store.create(admitted, now), 201)

    def _update(self, request: web.Request, t: Target, old: Obj, new: Obj) -> web.Response:
        """Common tail of PUT and PATCH: split status, admit, store (unless dryRun)."""
        # The resourceVersion the client sent is its precondition (optimistic concurrency).
        sent_rv = new.get("metadata", {}).get("resourceVersion")
        managed = old.get("metadata", {}).get("managedFields")
        if managed and "managedFields" not in new.get("metadata", {}):
            new["metadata"]["managedFields"] = managed  # a plain update keeps field owners
        if t.sub == "status":
            merged = copy.deepcopy(old)
            merged["status"] = new.get("status", {})
            new = merged
        elif "status" in t.res.subresources:
            new["status"] = old.get("status", {})
            if not new["status"]:
                new.pop("status")
        now = self.clock()
        admitted = self.admission.admit_update(old, new, now)
        self.access.check_escalation(request, admitted)
        if sent_rv:
            admitted["metadata"]["resourceVersion"] = sent_rv
        if _dry_run(request):
            return _json(admitted)
        return _json(self.store.update(admitted, now))

    async def _replace(self, request: web.Request, t: Target) -> web.Response:
        new = await self._body(request, t)
        return self._update(request, t, self._lookup(t), new)

    async def _patch(self, request: web.Request, t: Target) -> web.Response:
        raw = await request.read()
        ctype = request.headers.get("Content-Type", "")
        old = self.store.get(t.res.kind, t.namespace or "", t.name)
        if ctype.startswith(APPLY_PATCH) and not t.sub:
            return self._server_side_apply(request, t, old, raw)
        if old is None:
            old = self._lookup(t)
        patched = apply_patch(old, raw, ctype)
        if not isinstance(patched.get("metadata"), dict):
            raise BadRequest("the patch removed metadata; keep it an object")
        patched["kind"] = t.res.kind
        self._check_identity(patched["metadata"], t)
        return self._update(request, t, old, patched)

    def _server_side_apply(
        self, request: web.Request, t: Target, old: Obj | None, raw: bytes
    ) -> web.Response:
        """Apply with field management (ssa.py); creates what does not exist yet."""
        manager = request.query.get("fieldManager", "")
        if not manager:  # as ValidatePatchOptions answers
            detail = "is required for apply patch: name who applies (kubectl sends one)"
            raise Invalid("PatchOptions.meta.k8s.io", "",
                          [FieldError("fieldManager", f"Required value: {detail}",
                                      "FieldValueRequired")])  # fmt: skip
        config = decode_object(raw, APPLY_PATCH)
        if not isinstance(config.get("metadata", {}), dict):
            raise BadRequest("metadata must be a JSON object")
        force = request.query.get("force") in ("true", "1")
        obj = ssa.apply(old or {}, config, manager, force, rfc3339(self.clock()))
        obj["kind"] = t.res.kind
        obj.setdefault("apiVersion", t.res.group_version)
        self._check_identity(obj.setdefault("metadata", {}), t)
        if old is None:
            return self._do_create(request, t, obj)
        return self._update(request, t, old, obj)

    async def _delete(self, request: web.Request, t: Target) -> web.Response:
        old = self._lookup(t)
        options = await delete_options(request)
        check_preconditions(options, old)
        if t.res.kind == "Namespace" and t.name in PROTECTED_NAMESPACES:
            raise Forbidden(f'namespace "{t.name}" may not be deleted: it is part of the cluster')
        if "All" in options.get("dryRun", []):
            return _json(old)
        return _json(self._delete_tree(old, options.get("propagationPolicy") == "Orphan"))

    def _delete_tree(self, obj: Obj, orphan: bool) -> Obj:
        """Delete ``obj``; its dependents by ownerReferences are deleted too, or with
        propagationPolicy=Orphan lose that reference (https://kubernetes.io/docs/concepts/
        architecture/garbage-collection/); a Namespace takes everything in it along."""
        meta = obj["metadata"]
        kind, ns, name = obj["kind"], meta.get("namespace", ""), meta["name"]
        gone = self.store.delete(kind, ns, name, self.clock())
        if kind == "Namespace":
            for res in resources.RESOURCES:
                for child in self.store.list(res.kind, name) if res.namespaced else []:
                    self._delete_quietly(child, orphan=False)
            return gone
        uid = meta.get("uid")
        if not orphan and kind not in _OWNER_KINDS:
            return gone  # dependents of other kinds, if any, are the garbage collector's
        dependents = self._dependents(uid, ns or None)
        for child in dependents if orphan else dependents[:MAX_CASCADE_IN_REQUEST]:
            # Beyond MAX_CASCADE_IN_REQUEST the garbage collector deletes the rest
            # (background cascading deletion) in budgeted steps, off the request path.
            if orphan:
                refs = child["metadata"]["ownerReferences"]
                child["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                self.store.update(child, self.clock())
            else:
                self._delete_quietly(child, orphan=False)
        return gone

    def _dependents(self, uid: Any, namespace: str | None) -> list[Obj]:
        found = []
        for res in resources.RESOURCES:
            for child in self.store.list(res.kind, namespace) if res.namespaced else []:
                owners = child.get("metadata", {}).get("ownerReferences") or []
                if any(isinstance(o, dict) and o.get("uid") == uid for o in owners):
                    found.append(child)
        return found

    def _delete_quietly(self, obj: Obj, orphan: bool) -> None:
        try:
            self._delete_tree(obj, orphan)
        except NotFound:
            pass  # already gone (deleted by an owner visited earlier)

    async def _delete_collection(self, request: web.Request, t: Target) -> web.Response:
        options = await delete_options(request)
        if "All" in options.get("dryRun", []):
            return _json(status_success(t.res.plural, ""))
        for obj in self._selected(request, t):
            self._delete_quietly(obj, options.get("propagationPolicy") == "Orphan")
        return _json(status_success(t.res.plural, ""))

    # ---- scale subresource -----------------------------------------------------------------

    async def _get_scale(self, request: web.Request, t: Target) -> web.Response:
        obj = self._lookup(t)
        return _json(scale_of(obj, _selector_of(obj)))

    async def _update_scale(self, request: web.Request, t: Target) -> web.Response:
        old = self._lookup(t)
        current = scale_of(old, _selector_of(old))
        raw = await request.read()
        if request.method == "PATCH":
            scale = apply_patch(current, raw, request.headers.get("Content-Type", ""))
        else:
            scale = decode_object(raw, request.content_type)
        shape_errors: list[FieldError] = []
        shapes.check(scale, SCALE_SHAPE, "", shape_errors)
        if shape_errors:
            raise Invalid("Scale", t.name, shape_errors)
        replicas = scale.get("spec", {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise BadRequest(f"Scale spec.replicas must be an integer >= 0, not {replicas!r}")
        new = copy.deepcopy(old)
        new["spec"]["replicas"] = replicas
        rv = scale.get("metadata", {}).get("resourceVersion")
        if rv:
            new["metadata"]["resourceVersion"] = rv
        now = self.clock()
        admitted = self.admission.admit_update(old, new, now)
        stored = admitted if _dry_run(request) else self.store.update(admitted, now)
        return _json(scale_of(stored, _selector_of(stored)))


def _not_served(request: web.Request) -> web.Response:
    err = NotFound(f"the server could not find the requested resource {request.path}")
    return _json(status_failure(err), 404)
