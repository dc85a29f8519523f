"""Field selectors (knemu.apiserver.rest.selectors); fuzzed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from knemu.apiserver.rest.selectors import fields_match, parse_field_selector
from knemu.apiserver.rest.status import BadRequest


@given(st.text(max_size=30))
@settings(max_examples=300, deadline=None)
def test_field_selector_parses_or_rejects(text: str) -> None:
    try:
        reqs = parse_field_selector(text)
    except BadRequest:
        return
    fields_match(reqs, {"metadata": {"name": "a"}, "spec": {"nodeName": "n"}})


def test_field_selectors() -> None:
    pod = {"metadata": {"name": "a"}, "spec": {"nodeName": "node-1", "hostNetwork": False}}
    assert fields_match(parse_field_selector("spec.nodeName=node-1"), pod)
    assert fields_match(parse_field_selector("spec.nodeName==node-1,metadata.name!=b"), pod)
    assert not fields_match(parse_field_selector("spec.nodeName!=node-1"), pod)
    assert fields_match(parse_field_selector("spec.hostNetwork=false"), pod)
    assert fields_match(parse_field_selector("status.phase="), pod)  # missing == ""
    with pytest.raises(BadRequest, match="FIELD=VALUE"):
        parse_field_selector("spec.nodeName")
