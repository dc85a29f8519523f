"""The object schemas knemu serves as OpenAPI: builders and the shared apimachinery types.

Each definition is an OpenAPI v2 (JSON Schema draft 4 subset) dict named as upstream names it
(``io.k8s.api.core.v1.Pod``), so kubectl's client-side validation messages, ``kubectl explain``
and strategic merge patch read them as they read a real cluster's.  The fields are those knemu
stores and validates (``validation_*.py``); a sub-object knemu keeps without interpreting is a
free-form ``object`` (any content accepted), never a made-up structure.  Merge keys and patch
strategies are upstream's (``x-kubernetes-patch-merge-key`` / ``-patch-strategy``), as
``strategic.py`` applies them.  ``documents.py`` turns this catalogue into the v2 and v3 documents.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

META = "io.k8s.apimachinery.pkg.apis.meta.v1."
CORE = "io.k8s.api.core.v1."
INTSTR = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"


def string(desc: str, enum: tuple[str, ...] = (), fmt: str = "") -> Schema:
    out: Schema = {"type": "string", "description": desc}
    if enum:
        out["enum"] = list(enum)
    if fmt:
        out["format"] = fmt
    return out


def integer(desc: str, fmt: str = "int32") -> Schema:
    return {"type": "integer", "format": fmt, "description": desc}


def boolean(desc: str) -> Schema:
    return {"type": "boolean", "description": desc}


def ref(name: str, desc: str = "") -> Schema:
    out: Schema = {"$ref": f"#/definitions/{name}"}
    if desc:
        out["description"] = desc
    return out


def array(items: Schema, desc: str, merge_key: str = "", strategy: str = "") -> Schema:
    """A list; ``merge_key``: a strategic merge patch merges items by that field."""
    out: Schema = {"type": "array", "items": items, "description": desc}
    if merge_key:
        out["x-kubernetes-patch-merge-key"] = merge_key
        out["x-kubernetes-patch-strategy"] = strategy or "merge"
        out["x-kubernetes-list-type"] = "map"
        out["x-kubernetes-list-map-keys"] = [merge_key]
    elif strategy:
        out["x-kubernetes-patch-strategy"] = strategy
    return out


def strings(desc: str) -> Schema:
    return array({"type": "string"}, desc)


def string_map(desc: str) -> Schema:
    return {"type": "object", "additionalProperties": {"type": "string"}, "description": desc}


def free(desc: str) -> Schema:
    """A sub-object knemu stores as given: any content is accepted."""
    return {"type": "object", "description": desc}


def obj(desc: str, props: dict[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    out: Schema = {"type": "object", "description": desc, "properties": props}
    if required:
        out["required"] = list(required)
    return out


def top(desc: str, group: str, version: str, kind: str, props: dict[str, Schema]) -> Schema:
    """A kind: apiVersion, kind and metadata first, tagged with its group/version/kind."""
    head = {
        "apiVersion": string(
            "APIVersion defines the versioned schema of this representation of an object."
        ),
        "kind": string(
            "Kind is a string value representing the REST resource this object "
            "represents. In CamelCase."
        ),
        "metadata": ref(META + "ObjectMeta", "Standard object's metadata."),
    }
    out = obj(desc, {**head, **props})
    out["x-kubernetes-group-version-kind"] = [{"group": group, "kind": kind, "version": version}]
    return out


def list_of(item: str, group: str, version: str, kind: str) -> Schema:
    out = top(
        f"{kind} is a list of {item.rsplit('.', 1)[1]}.",
        group,
        version,
        kind,
        {
            "items": array(ref(item), "List of objects."),
        },
    )
    out["properties"]["metadata"] = ref(META + "ListMeta", "Standard list metadata.")
    out["required"] = ["items"]
    return out


TIME = string("RFC 3339 date and time in UTC.", fmt="date-time")

META_TYPES: dict[str, Schema] = {
    META + "ObjectMeta": obj(
        "ObjectMeta is metadata that all persisted resources must have.",
        {
            "name": string("Name must be unique within a namespace."),
            "generateName": string("Prefix used to generate a unique name if name is empty."),
            "namespace": string(
                "Namespace defines the space within which each name must be "
                "unique. Empty means the default namespace."
            ),
            "uid": string("UID is the unique in time and space value for this object."),
            "resourceVersion": string(
                "An opaque value that represents the internal version of "
                "this object, used for optimistic concurrency."
            ),
            "generation": integer(
                "A sequence number representing a specific generation of the desired state.",
                "int64",
            ),
            "creationTimestamp": TIME,
            "deletionTimestamp": TIME,
            "deletionGracePeriodSeconds": integer(
                "Seconds allowed for graceful termination.", "int64"
            ),
            "labels": string_map(
                "Map of string keys and values that can be used to organize "
                "and categorize (scope and select) objects."
            ),
            "annotations": string_map(
                "Unstructured key value map stored with a resource that "
                "may be set by external tools."
            ),
            "ownerReferences": array(
                ref(META + "OwnerReference"),
                "Objects depended on by this object; when all are deleted, this one is "
                "garbage collected.",
                merge_key="uid",
            ),
            "finalizers": array(
                {"type": "string"},
                "Must be empty before the object is deleted from the registry.",
                strategy="merge",
            ),
            "managedFields": array(
                free("Which manager owns which fields (server-side apply)."),
                "Maps workflow-id and version to the set of fields managed by that workflow.",
            ),
        },
    ),
    META + "ListMeta": obj(
        "ListMeta describes metadata that synthetic resources must have.",
        {
            "resourceVersion": string("The version of the list, to watch from."),
            "continue": string("Set when more results are available: pass to get the next."),
            "remainingItemCount": integer("Items left after this page.", "int64"),
        },
    ),
    META + "OwnerReference": obj(
        "OwnerReference contains enough information to let you identify an owning object.",
        {
            "apiVersion": string("API version of the referent."),
            "kind": string("Kind of the referent."),
            "name": string("Name of the referent."),
            "uid": string("UID of the referent."),
            "controller": boolean("If true, this reference points to the managing controller."),
            "blockOwnerDeletion": boolean("If true, the owner cannot be deleted before this."),
        },
        ("apiVersion", "kind", "name", "uid"),
    ),
    META + "LabelSelector": obj(
        "A label selector is a label query over a set of resources. The result of matchLabels "
        "and matchExpressions are ANDed. An empty label selector matches all objects.",
        {
            "matchLabels": string_map(
                "{key,value} pairs; each is a matchExpressions element "
                "with operator In and the single value."
            ),
            "matchExpressions": array(
                obj(
                    "A selector requirement: a key, an operator and values.",
                    {
                        "key": string("The label key that the selector applies to."),
                        "operator": string(
                            "Relationship of the key to the values.",
                            ("In", "NotIn", "Exists", "DoesNotExist"),
                        ),
                        "values": strings("Values for In and NotIn; empty for Exists."),
                    },
                    ("key", "operator"),
                ),
                "A list of label selector requirements. The requirements are ANDed.",
            ),
        },
    ),
    META + "Condition": obj(
        "Condition contains details for one aspect of the current state of an object.",
        {
            "type": string("Type of condition in CamelCase."),
            "status": string("Status of the condition.", ("True", "False", "Unknown")),
            "reason": string("A programmatic identifier of the reason for the last transition."),
            "message": string("A human readable message about the transition."),
            "lastTransitionTime": TIME,
        },
        ("type", "status"),
    ),
    INTSTR: {
        "type": "string",
        "format": "int-or-string",
        "description": "An int32 or a string (a named port, a percentage).",
    },
    QUANTITY: {
        "type": "string",
        "description": "A fixed-point number with a suffix: 100m, 128Mi, 1G.",
    },
}
