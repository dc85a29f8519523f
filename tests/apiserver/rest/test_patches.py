"""RFC 7386 merge patch and RFC 6902 JSON Patch (knemu.apiserver.rest.patches); fuzzed."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from knemu.apiserver.rest.patches import json_patch, merge_patch
from knemu.apiserver.rest.status import BadRequest
from knemu.errors import Invalid, KnemuError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=10,
)


def test_merge_patch_rfc7386_examples() -> None:
    # RFC 7386 section 3 test cases (a selection).
    assert merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": "b"}, {"b": "c"}) == {"a": "b", "b": "c"}
    assert merge_patch({"a": "b"}, {"a": None}) == {}
    assert merge_patch({"a": ["b"]}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}) == {"a": {"b": "d"}}
    assert merge_patch({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}
    assert merge_patch({"e": None}, {"a": 1}) == {"e": None, "a": 1}
    assert merge_patch([1, 2], {"a": "b", "c": None}) == {"a": "b"}
    assert merge_patch({}, {"a": {"bb": {"ccc": None}}}) == {"a": {"bb": {}}}


@given(json_values, json_values)
@settings(max_examples=200, deadline=None)
def test_merge_patch_is_idempotent(target: Any, patch: Any) -> None:
    once = merge_patch(target, patch)
    assert merge_patch(once, patch) == once


def test_json_patch_rfc6902_operations() -> None:
    doc = {"a": {"b": [1, 2]}, "c": "x"}
    ops = [
        {"op": "add", "path": "/a/b/1", "value": 9},
        {"op": "add", "path": "/a/b/-", "value": 3},
        {"op": "remove", "path": "/c"},
        {"op": "copy", "from": "/a/b", "path": "/d"},
        {"op": "move", "from": "/d", "path": "/e"},
        {"op": "replace", "path": "/a/b/0", "value": 0},
        {"op": "test", "path": "/e", "value": [1, 9, 2, 3]},
        {"op": "add", "path": "/f~1g", "value": True},
    ]
    assert json_patch(doc, ops) == {"a": {"b": [0, 9, 2, 3]}, "e": [1, 9, 2, 3], "f/g": True}
    assert doc == {"a": {"b": [1, 2]}, "c": "x"}  # the input is not modified
    with pytest.raises(Invalid):
        json_patch(doc, [{"op": "test", "path": "/c", "value": "y"}])
    with pytest.raises(BadRequest, match="does not exist"):
        json_patch(doc, [{"op": "remove", "path": "/zz"}])
    with pytest.raises(BadRequest, match="not one of"):
        json_patch(doc, [{"op": "frob", "path": "/c"}])


ops_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "x"]),
            "path": st.sampled_from(["", "/", "/a", "/a/0", "/a/-", "/b/c", "a", "/a/9"]),
        },
        optional={"value": json_values, "from": st.sampled_from(["/a", "/b", "/a/0", "", "q"])},
    ),
    max_size=4,
)


@given(json_values, ops_strategy)
@settings(max_examples=300, deadline=None)
def test_json_patch_never_crashes(doc: Any, ops: list[dict[str, Any]]) -> None:
    try:
        json_patch(doc, ops)
    except KnemuError:
        pass  # rejected with a message: fine
