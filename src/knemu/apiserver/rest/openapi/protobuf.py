"""OpenAPI v2 as protobuf: the gnostic ``openapi.v2.Document`` kubectl reads from /openapi/v2.

client-go's ``DiscoveryClient.OpenAPISchema`` asks for
``application/com.github.proto-openapi.spec.v2@v1.0+protobuf`` and unmarshals the answer as
gnostic's ``openapiv2/OpenAPIv2.proto`` message (it accepts nothing else), so the JSON document
``documents.py`` builds is encoded here, pure, with that file's field numbers.  Only what
kubectl's validation and ``explain`` read is encoded: info, definitions (type, format,
description, required, enum, items, properties, additionalProperties, $ref and the ``x-``
vendor extensions, whose values gnostic carries as YAML text - JSON is YAML).
Protobuf wire format: https://protobuf.dev/programming-guides/encoding/.
"""

from __future__ import annotations

import json
from typing import Any

Schema = dict[str, Any]

# gnostic openapi.v2 field numbers
_DOC_SWAGGER, _DOC_INFO, _DOC_DEFINITIONS = 1, 2, 9
_INFO_TITLE, _INFO_VERSION = 1, 2
_NAMED_NAME, _NAMED_VALUE = 1, 2  # NamedSchema, NamedAny
_ANY_YAML = 2
_SCHEMA_FIELDS = {"$ref": 1, "format": 2, "title": 3, "description": 4}
_SCHEMA_REQUIRED, _SCHEMA_ENUM, _SCHEMA_ADDITIONAL = 19, 20, 21
_SCHEMA_TYPE, _SCHEMA_ITEMS, _SCHEMA_PROPERTIES, _SCHEMA_EXTENSIONS = 22, 23, 25, 31
_ADDITIONAL_SCHEMA, _ADDITIONAL_BOOLEAN = 1, 2


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): strings and embedded messages."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _text(number: int, value: str) -> bytes:
    return _field(number, value.encode())


def _any(value: Any) -> bytes:
    return _text(_ANY_YAML, json.dumps(value))


def encode_schema(schema: Schema) -> bytes:
    out = bytearray()
    for key, number in _SCHEMA_FIELDS.items():
        if isinstance(schema.get(key), str):
            out += _text(number, schema[key])
    for name in schema.get("required", []):
        out += _text(_SCHEMA_REQUIRED, name)
    for value in schema.get("enum", []):
        out += _field(_SCHEMA_ENUM, _any(value))
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        out += _field(_SCHEMA_ADDITIONAL, _field(_ADDITIONAL_SCHEMA, encode_schema(extra)))
    elif isinstance(extra, bool):
        out += _field(_SCHEMA_ADDITIONAL, _varint(_ADDITIONAL_BOOLEAN << 3) + _varint(int(extra)))
    if "type" in schema:
        out += _field(_SCHEMA_TYPE, _text(1, schema["type"]))
    if "items" in schema:
        out += _field(_SCHEMA_ITEMS, _field(1, encode_schema(schema["items"])))
    if "properties" in schema:
        out += _field(_SCHEMA_PROPERTIES, _named_schemas(schema["properties"]))
    for key, value in schema.items():
        if key.startswith("x-"):
            out += _field(_SCHEMA_EXTENSIONS, _text(_NAMED_NAME, key) + _field(2, _any(value)))
    return bytes(out)


def _named_schemas(schemas: dict[str, Schema]) -> bytes:
    return b"".join(
        _field(1, _text(_NAMED_NAME, name) + _field(_NAMED_VALUE, encode_schema(schema)))
        for name, schema in schemas.items()
    )


def encode_document(doc: dict[str, Any]) -> bytes:
    """The v2 document (``openapi.v2_document()``) as an ``openapi.v2.Document`` message."""
    info = doc.get("info", {})
    return (
        _text(_DOC_SWAGGER, doc.get("swagger", "2.0"))
        + _field(
            _DOC_INFO,
            _text(_INFO_TITLE, info.get("title", ""))
            + _text(_INFO_VERSION, info.get("version", "")),
        )
        + _field(_DOC_DEFINITIONS, _named_schemas(doc.get("definitions", {})))
    )
