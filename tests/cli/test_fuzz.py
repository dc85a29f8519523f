"""Parse it or reject it, never crash: JSONPath templates and manifest text (hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings, strategies as st

from knemu.cli.manifests import ManifestError, parse_documents, strip_trailing_whitespace
from knemu.cli.output.jsonpath import JsonPathError, render

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=10,
)
TEMPLATE_ALPHABET = st.sampled_from(list("{}[]().*@?=!<>\"',:-_ abcnrgeitms0123\\"))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(TEMPLATE_ALPHABET, max_size=30), JSON)
def test_templates_render_or_raise_jsonpath_error(template: str, obj: Any) -> None:
    try:
        assert isinstance(render(template, obj), str)
    except JsonPathError:
        pass


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(st.sampled_from(list("ab: -|>\t\n#{}[]'\"1")), max_size=60))
def test_manifest_text_parses_or_raises_manifest_error(text: str) -> None:
    stripped = strip_trailing_whitespace(text)
    assert stripped.count("\n") == text.count("\n")  # line numbers in errors stay true
    try:
        parse_documents(text, "fuzz.yaml")
    except ManifestError as exc:
        assert exc.message.startswith("fuzz.yaml")
