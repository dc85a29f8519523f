"""Request limits of the REST layer, as kube-apiserver has them: no single request may take
the api-server's memory or event loop.

* ``MAX_BODY_BYTES`` (3 MiB, kube-apiserver's ``--max-request-body-bytes`` default): a longer
  body is refused with 413 RequestEntityTooLarge before it is parsed.
* ``MAX_DEPTH`` (100 levels of objects/arrays) and ``MAX_NODES`` (100,000 values): checked on
  every decoded body, with an explicit stack (never recursion), so a body nested 10^6 deep or
  a YAML alias bomb gets a 400 naming the limit instead of a RecursionError or an exponential
  copy.  Only JSON values pass: string keys, finite numbers, integers within int64; YAML
  timestamps become their RFC 3339 text (as Kubernetes' YAML-to-JSON step leaves them).
* JSON Patch (RFC 6902): at most ``MAX_JSON_PATCH_OPS`` (10,000, kube-apiserver's
  ``maxJSONPatchOperations``) operations, and the values an operation adds (``add``,
  ``replace``, ``copy``'s source) are counted against ``MAX_NODES`` *before* it is applied, so
  31 doubling ``copy`` operations stop at the limit instead of growing to 2^31 values.
* Every patch result is at most ``MAX_OBJECT_BYTES`` of JSON (413 otherwise).

Nothing here does I/O.
"""

from __future__ import annotations

import datetime
import math
import re
from itertools import accumulate
from typing import Any

from knemu.errors import LocalError

MAX_BODY_BYTES = 3 * 1024 * 1024
MAX_OBJECT_BYTES = 3 * 1024 * 1024
MAX_DEPTH = 100
MAX_NODES = 100_000
MAX_JSON_PATCH_OPS = 10_000
_INT64 = (-(2**63), 2**63 - 1)


class TooLarge(LocalError):
    """A request body or the object it would produce is over a size limit (HTTP 413)."""

    http_status = 413
    reason = "RequestEntityTooLarge"
    grpc_code = "RESOURCE_EXHAUSTED"


class TooComplex(LocalError):
    """A body nested too deep, with too many values, or holding a non-JSON value (HTTP 400)."""


def body_too_large(what: str = "request body") -> TooLarge:
    return TooLarge(
        f"{what} is larger than the api-server's limit of {MAX_BODY_BYTES} bytes "
        "(as kube-apiserver's --max-request-body-bytes); split the object or send less"
    )


def _scalar(value: Any, path: str, what: str) -> Any:
    """A JSON scalar as stored; TooComplex for anything JSON cannot carry."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise TooComplex(f"{what}: the number at {path or '/'} is outside the int64 range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TooComplex(f"{what}: the number at {path or '/'} is not finite ({value})")
        return value
    if isinstance(value, (datetime.date, datetime.datetime)):
        if isinstance(value, datetime.datetime) and value.tzinfo is not None:
            return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return value.isoformat()
    raise TooComplex(
        f"{what}: the value at {path or '/'} is a {type(value).__name__}, which JSON cannot "
        "carry; send strings, numbers, booleans, null, lists and maps"
    )


def check_value(value: Any, what: str = "request body", budget: int = MAX_NODES) -> int:
    """Check (and normalise in place) a decoded body against MAX_DEPTH, ``budget`` values and
    JSON's types; return how many values it holds.  Iterative: any depth is safe to check."""
    count = 0
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        node, depth, path = stack.pop()
        count += 1
        if count > budget:
            raise TooComplex(
                f"{what} holds more than {budget} values (the api-server's limit); send less"
            )
        if depth > MAX_DEPTH:
            raise TooComplex(
                f"{what} is nested more than {MAX_DEPTH} levels deep (at {path}); "
                "Kubernetes objects are never that deep"
            )
        if isinstance(node, dict):
            for key in list(node):
                if not isinstance(key, str):
                    raise TooComplex(f"{what}: the key {key!r} at {path or '/'} is not a string")
                child = node[key]
                if isinstance(child, (dict, list)):
                    stack.append((child, depth + 1, f"{path}/{key}"))
                else:
                    count += 1
                    node[key] = _scalar(child, f"{path}/{key}", what)
        elif isinstance(node, list):
            for index, child in enumerate(node):
                if isinstance(child, (dict, list)):
                    stack.append((child, depth + 1, f"{path}/{index}"))
                else:
                    count += 1
                    node[index] = _scalar(child, f"{path}/{index}", what)
        else:
            _scalar(node, path, what)
    if count > budget:
        raise TooComplex(f"{what} holds more than {budget} values (the api-server's limit)")
    return count


_NOT_FLOW = re.compile(r"[^\[\]{}]+")


def check_yaml_flow_depth(text: str, what: str = "request body") -> None:
    """PyYAML takes seconds (quadratic) on deep flow collections (``[[[[...``) before it
    fails, so their depth is counted first.  Brackets inside quoted strings count too: an
    over-estimate that no real manifest comes near."""
    brackets = _NOT_FLOW.sub("", text)
    if len(brackets) <= MAX_DEPTH:
        return
    steps = (1 if c in "[{" else -1 for c in brackets)
    if max(accumulate(steps), default=0) > MAX_DEPTH:
        raise TooComplex(
            f"{what} is nested more than {MAX_DEPTH} levels deep; Kubernetes objects are "
            "never that deep"
        )


def check_json_patch_ops(ops: list[Any]) -> None:
    if len(ops) > MAX_JSON_PATCH_OPS:
        raise TooLarge(
            f"the JSON patch has {len(ops)} operations; the limit is {MAX_JSON_PATCH_OPS} "
            "(kube-apiserver's maxJSONPatchOperations): split it into several patches"
        )


class PatchGrowth:
    """Counts the values JSON Patch operations add, before each is applied."""

    def __init__(self, start: int) -> None:
        self.total = start

    def add(self, value: Any, index: int) -> None:
        remaining = MAX_NODES - self.total
        try:
            self.total += check_value(value, f"JSON patch operation {index}", max(remaining, 0))
        except TooComplex:
            raise TooLarge(
                f"JSON patch operation {index} would grow the object past {MAX_NODES} values "
                "(the api-server's limit on a patch result); patch less at once"
            ) from None


def check_encoded_size(encoded_len: int, what: str) -> None:
    if encoded_len > MAX_OBJECT_BYTES:
        raise TooLarge(
            f"{what} would be {encoded_len} bytes of JSON; the limit is {MAX_OBJECT_BYTES} "
            "bytes: make it smaller"
        )
