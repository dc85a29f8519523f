"""Label selectors: string syntax, LabelSelector objects, matching, errors."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings, strategies as st

from knemu.apiserver.meta import labels
from knemu.errors import LocalError

CASES = [
    ("", {"a": "b"}, True),
    ("app=web", {"app": "web"}, True),
    ("app==web", {"app": "web"}, True),
    ("app=web", {"app": "db"}, False),
    ("app!=web", {"app": "db"}, True),
    ("app!=web", {}, True),  # != matches objects without the key
    ("env in (prod, staging)", {"env": "staging"}, True),
    ("env in (prod,staging)", {"env": "dev"}, False),
    ("env notin (prod)", {}, True),
    ("env notin (prod)", {"env": "prod"}, False),
    ("canary", {"canary": ""}, True),
    ("canary", {}, False),
    ("!canary", {}, True),
    ("!canary", {"canary": "1"}, False),
    ("app=web,tier!=db,!canary", {"app": "web", "tier": "fe"}, True),
    ("app=web, tier!=db", {"app": "web", "tier": "db"}, False),
    ("example.com/team=net", {"example.com/team": "net"}, True),
    ("a=", {"a": ""}, True),
]


@pytest.mark.parametrize(("text", "obj_labels", "expected"), CASES)
def test_string_selectors(text: str, obj_labels: dict[str, str], expected: bool) -> None:
    assert labels.matches(labels.parse_selector(text), obj_labels) is expected


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("app=web,", "unexpected end"),
        ("app in web", "expected '('"),
        ("app in ()", "at least one value"),
        ("app = (x)", "expected a value"),
        ("app web", "unknown operator 'web'"),
        ("bad key!=x", "unknown operator 'key'"),
        ("a=b c=d", "expected ',' between requirements, found 'c'"),
        ("a=b)", "expected ',' between requirements"),
        ("-bad=x", "invalid key"),
        ("app=-x-", "invalid value"),
        ("!", "unexpected end"),
    ],
)
def test_bad_syntax_says_what_is_wrong(text: str, complaint: str) -> None:
    with pytest.raises(LocalError, match=re.escape(complaint)):
        labels.parse_selector(text)


def test_label_selector_objects() -> None:
    sel = labels.from_label_selector(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "qa"]},
                {"key": "legacy", "operator": "DoesNotExist"},
                {"key": "team", "operator": "Exists"},
                {"key": "zone", "operator": "NotIn", "values": ["b"]},
            ],
        }
    )
    assert sel.matches({"app": "web", "env": "qa", "team": "x", "zone": "a"})
    assert not sel.matches({"app": "web", "env": "qa", "team": "x", "legacy": "1"})
    assert not sel.matches({"app": "web", "env": "dev", "team": "x"})
    assert str(sel) == "app=web,env in (prod,qa),!legacy,team,zone notin (b)"


@pytest.mark.parametrize(
    ("expr", "complaint"),
    [
        ({"key": "a", "operator": "Equals", "values": ["x"]}, "not one of In, NotIn"),
        ({"key": "a", "operator": "In"}, "needs values"),
        ({"key": "a", "operator": "Exists", "values": ["x"]}, "takes no values"),
    ],
)
def test_bad_match_expressions(expr: dict[str, object], complaint: str) -> None:
    with pytest.raises(LocalError, match=complaint):
        labels.from_label_selector({"matchExpressions": [expr]})


@settings(max_examples=200, derandomize=True)
@given(st.text(max_size=40))
def test_parser_never_crashes(text: str) -> None:
    try:
        labels.parse_selector(text)
    except LocalError:
        pass


@settings(max_examples=100, derandomize=True)
@given(
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True),
        st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True),
        max_size=4,
    )
)
def test_printed_selector_parses_back(mapping: dict[str, str]) -> None:
    sel = labels.from_map(mapping)
    assert labels.parse_selector(str(sel)) == sel
    assert sel.matches(mapping)
