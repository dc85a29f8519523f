"""Name validators and generators against known vectors."""

from __future__ import annotations

import random

import pytest

from knemu.apiserver.meta import naming


@pytest.mark.parametrize(
    ("data", "expected"),
    # FNV-1a 32-bit test vectors (draft-eastlake-fnv, Go's hash/fnv tests)
    [(b"", 0x811C9DC5), (b"a", 0xE40C292C), (b"foobar", 0xBF9CF968)],
)
def test_fnv32a_vectors(data: bytes, expected: int) -> None:
    assert naming.fnv32a(data) == expected


def test_safe_encode_maps_digits_like_apimachinery() -> None:
    # rand.SafeEncodeString maps byte b to alphabet[b % 27]: '0' (48) -> alphabet[21] == '4'
    assert naming.safe_encode("0123456789") == "456789bcdf"


def test_template_hash_is_stable_and_sensitive() -> None:
    template = {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c"}]}}
    first = naming.template_hash(template)
    assert first == naming.template_hash(
        {"spec": template["spec"], "metadata": template["metadata"]}
    )
    assert first != naming.template_hash(template, collision_count=1)
    assert set(first) <= set(naming.ALPHABET) and 1 <= len(first) <= 10


def test_random_suffix_uses_the_alphabet_and_the_seed() -> None:
    a = naming.random_suffix(random.Random(1))
    assert a == naming.random_suffix(random.Random(1))
    assert len(a) == 5 and set(a) <= set(naming.ALPHABET)


@pytest.mark.parametrize(
    ("value", "ok"),
    [("http", True), ("web-80", True), ("h2c", True), ("80", False), ("-web", False),
     ("we--b", False), ("WEB", False), ("a-very-long-name", False)],
)  # fmt: skip
def test_iana_svc_name(value: str, ok: bool) -> None:
    assert (naming.iana_svc_name(value) == []) is ok


@pytest.mark.parametrize(
    ("value", "label", "subdomain", "dns1035"),
    [("web", True, True, True), ("1web", True, True, False), ("a.b", False, True, False),
     ("A", False, False, False), ("a" * 64, False, True, False), ("web-", False, False, False)],
)  # fmt: skip
def test_dns_names(value: str, label: bool, subdomain: bool, dns1035: bool) -> None:
    assert (naming.dns1123_label(value) == []) is label
    assert (naming.dns1123_subdomain(value) == []) is subdomain
    assert (naming.dns1035_label(value) == []) is dns1035


@pytest.mark.parametrize(
    ("key", "ok"),
    [("app", True), ("example.com/app", True), ("k8s.io/a_b.c", True), ("/app", False),
     ("Example.com/app", False), ("a/b/c", False), ("", False), ("a" * 64, False)],
)  # fmt: skip
def test_label_keys(key: str, ok: bool) -> None:
    assert (naming.qualified_name(key) == []) is ok
