"""Request bodies: JSON/YAML decoding parses or rejects, never crashes (rest.bodies)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from knemu.apiserver.rest.bodies import decode_body, decode_object
from knemu.errors import KnemuError, LocalError


@given(st.binary(max_size=40), st.sampled_from(["application/json", "application/yaml"]))
@settings(max_examples=300, deadline=None)
def test_decode_body_parses_or_rejects(raw: bytes, ctype: str) -> None:
    try:
        decode_body(raw, ctype)
    except LocalError as err:  # BadRequest, or TooComplex from the limits: both a 400
        assert err.http_status == 400 and "body" in err.message


def test_yaml_bodies_with_a_repeated_key_are_bad_requests() -> None:
    body = b"apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  name: b\n"
    with pytest.raises(KnemuError, match="mapping key 'name' already defined at line 4") as err:
        decode_object(body, "application/yaml")
    assert err.value.http_status == 400
