"""OpenAPI v2 and v3 documents of the served API, as kube-apiserver publishes them.

kubectl reads both (https://kubernetes.io/docs/concepts/overview/kubernetes-api/#openapi-
interface-definition): ``/openapi/v2`` (protobuf, ``protobuf.py``) for client-side validation
of ``apply``/``create``/``replace``, ``/openapi/v3`` (a discovery document naming one document
per group/version, each fetched with a ``hash`` query so it can be cached) for ``explain``,
strategic merge patch metadata and the field-validation probe.  Both are generated from the
catalogue in ``schemas*.py`` and the resource table in ``rest/resources.py``: every
served kind gets its definition (tagged ``x-kubernetes-group-version-kind``) and paths whose
operations carry ``x-kubernetes-action`` and the kind, and PATCH lists the patch content types.
The operations do not list the ``fieldValidation`` parameter: kubectl then validates on the
client against these schemas and reports unknown or mistyped fields itself.

Pure: documents are built once per process (the table is static) and served from memory.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from typing import Any

from knemu.apiserver.rest import resources
from knemu.apiserver.rest.openapi.protobuf import encode_document
from knemu.apiserver.rest.openapi.schemas import META, META_TYPES, Schema
from knemu.apiserver.rest.openapi.schemas_config import CONFIG_TYPES
from knemu.apiserver.rest.openapi.schemas_core import CORE_TYPES
from knemu.apiserver.rest.openapi.schemas_groups import GROUP_TYPES
from knemu.apiserver.rest.openapi.schemas_rbac import RBAC_TYPES
from knemu.apiserver.rest.resources import Resource

# What client-go asks for, and (with a parseable media type) what kube-openapi answers with.
PROTOBUF_V2_ACCEPT = (
    "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
)
PROTOBUF_V2 = PROTOBUF_V2_ACCEPT[1]
PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
)
_V2_REF, _V3_REF = "#/definitions/", "#/components/schemas/"


def definitions() -> dict[str, Schema]:
    """Every schema by its upstream name."""
    return {**META_TYPES, **CORE_TYPES, **CONFIG_TYPES, **GROUP_TYPES, **RBAC_TYPES}


def definition_name(res: Resource) -> str | None:
    """The definition of a served resource's kind (None: not in the catalogue)."""
    for name, schema in definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            if (gvk["group"], gvk["version"], gvk["kind"]) == (res.group, res.version, res.kind):
                return name
    return None


def _gvk(res: Resource) -> dict[str, str]:
    return {"group": res.group, "version": res.version, "kind": res.kind}


def _prefix(res: Resource) -> str:
    return f"/apis/{res.group_version}" if res.group else "/api/v1"


def _operation(res: Resource, action: str, schema_ref: str, op_id: str) -> dict[str, Any]:
    return {
        "operationId": op_id,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": _gvk(res),
        "responses": {"200": {"description": "OK", "schema": {"$ref": schema_ref}}},
    }


def v2_paths(res: Resource) -> dict[str, Any]:
    """The collection and object paths of one resource, with their operations."""
    name = definition_name(res)
    if name is None:
        return {}
    one, many = _V2_REF + name, _V2_REF + name + "List"
    base = _prefix(res) + ("/namespaces/{namespace}" if res.namespaced else "") + "/" + res.plural
    ident = res.kind + ("Namespaced" if res.namespaced else "")
    patch = _operation(res, "patch", one, "patch" + ident)
    patch["consumes"] = list(PATCH_TYPES)
    collection = {
        "get": ("list", _operation(res, "list", many, "list" + ident)),
        "post": ("create", _operation(res, "post", one, "create" + ident)),
    }
    item = {
        "get": ("get", _operation(res, "get", one, "read" + ident)),
        "put": ("update", _operation(res, "put", one, "replace" + ident)),
        "patch": ("patch", patch),
        "delete": ("delete", _operation(res, "delete", one, "delete" + ident)),
    }
    paths = {
        path: {method: op for method, (verb, op) in ops.items() if verb in res.verbs}
        for path, ops in ((base, collection), (base + "/{name}", item))
    }
    return {path: ops for path, ops in paths.items() if ops}


@functools.cache
def v2_document() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for res in resources.RESOURCES:
        paths.update(v2_paths(res))
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": resources.VERSION_INFO["gitVersion"]},
        "paths": paths,
        "definitions": definitions(),
    }


@functools.cache
def v2_protobuf() -> bytes:
    return encode_document(v2_document())


# ---- v3 ---------------------------------------------------------------------------------------


def to_v3(schema: Any) -> Any:
    """A v2 schema in v3 form: refs under components, a ref with siblings wrapped in allOf
    (as kube-openapi emits it, since a v3 ``$ref`` ignores its siblings)."""
    if isinstance(schema, list):
        return [to_v3(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: to_v3(v) for k, v in schema.items()}
    if "$ref" in out:
        target = {"$ref": out.pop("$ref").replace(_V2_REF, _V3_REF)}
        if not out:
            return target
        out["allOf"] = [target]
    if out.get("format") == "int-or-string":
        out["x-kubernetes-int-or-string"] = True
    return out


def _refs(value: Any) -> set[str]:
    if isinstance(value, dict):
        ref = value.get("$ref", "")
        found = {ref.removeprefix(_V2_REF).removeprefix(_V3_REF)} if ref else set()
        return found.union(*(_refs(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_refs(v) for v in value))
    return set()


def _closure(names: set[str], defs: dict[str, Schema]) -> set[str]:
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        if name not in seen and name in defs:
            seen.add(name)
            todo += list(_refs(defs[name]))
    return seen


def _v3_operation(op: dict[str, Any], method: str) -> dict[str, Any]:
    out = {k: v for k, v in op.items() if k not in ("responses", "consumes")}
    ref = op["responses"]["200"]["schema"]["$ref"].replace(_V2_REF, _V3_REF)
    body = {"schema": {"$ref": ref}}
    out["responses"] = {"200": {"description": "OK", "content": {"application/json": body}}}
    if method == "patch":
        patch = {"schema": {"$ref": _V3_REF + META + "Patch"}}
        out["requestBody"] = {"content": {t: patch for t in PATCH_TYPES}, "required": True}
    elif method in ("post", "put"):
        out["requestBody"] = {"content": {"application/json": body}, "required": True}
    return out


@functools.cache
def v3_documents() -> dict[str, tuple[str, bytes]]:
    """``api/v1`` / ``apis/<group>/<version>`` -> (hash, JSON document)."""
    defs = definitions()
    defs[META + "Patch"] = {"type": "object", "description": "The body of a PATCH request."}
    out = {}
    for gv in ["v1", *resources.group_versions()]:
        served = [r for r in resources.RESOURCES if r.group_version == gv]
        paths = {}
        for res in served:
            for path, ops in v2_paths(res).items():
                paths[path] = {m: _v3_operation(op, m) for m, op in ops.items()}
        wanted = _closure(_refs(paths) | {META + "Patch"}, defs)
        doc = {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": resources.VERSION_INFO["gitVersion"]},
            "paths": to_v3(paths),
            "components": {"schemas": {n: to_v3(copy.deepcopy(defs[n])) for n in sorted(wanted)}},
        }
        body = json.dumps(doc).encode()
        key = "api/v1" if gv == "v1" else f"apis/{gv}"
        out[key] = (hashlib.sha512(body).hexdigest().upper(), body)
    return out


def v3_discovery() -> dict[str, Any]:
    """GET /openapi/v3: where each group/version's document is."""
    return {
        "paths": {
            key: {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest}"}
            for key, (digest, _) in v3_documents().items()
        }
    }
