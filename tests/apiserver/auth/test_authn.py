"""The authenticator chain: certificate subject, then bearer token, else anonymous."""

from __future__ import annotations

import pytest

from knemu.apiserver.auth.authn import (
    ANONYMOUS_USER,
    AUTHENTICATED,
    Authenticator,
    Unauthorized,
    UserInfo,
    anonymous_allowed,
)

AUTH = Authenticator({"t0k3n": UserInfo("alice", ("dev",), "uid-1")})


def test_a_certificate_subject_is_the_user_and_its_groups() -> None:
    user = AUTH.authenticate(("bob", ("ops", "qa")), None)
    assert user == UserInfo("bob", ("ops", "qa", AUTHENTICATED))


def test_the_certificate_wins_over_a_token() -> None:
    assert AUTH.authenticate(("bob", ()), "Bearer t0k3n").name == "bob"


def test_a_known_token_is_its_user() -> None:
    user = AUTH.authenticate(None, "Bearer t0k3n")
    assert user.name == "alice" and user.groups == ("dev", AUTHENTICATED) and user.uid == "uid-1"
    assert AUTH.authenticate(None, "bearer   t0k3n ").name == "alice"  # scheme is case-blind


@pytest.mark.parametrize("header", ["Bearer nope", "Bearer ", "Basic YTpi", "t0k3n", "Bearer"])
def test_a_bad_or_malformed_token_is_401_never_anonymous(header: str) -> None:
    with pytest.raises(Unauthorized):
        AUTH.authenticate(None, header)


def test_nothing_is_anonymous_and_anonymous_reaches_only_public_paths() -> None:
    assert AUTH.authenticate(None, None) == ANONYMOUS_USER
    assert AUTH.authenticate(("", ()), None) == ANONYMOUS_USER  # a certificate without a CN
    for path in ("/healthz", "/readyz", "/livez", "/version", "/version/", "/console/login",
                 "/console/static/login.js"):  # fmt: skip
        assert anonymous_allowed(path), path
    for path in ("/api/v1/pods", "/console/", "/console/api/events", "/healthzz", "/",
                 "/console/static/../api"):  # fmt: skip
        assert not anonymous_allowed(path), path


def test_added_tokens_authenticate() -> None:
    auth = Authenticator({})
    auth.add_token("new", UserInfo("carol"))
    assert auth.authenticate(None, "Bearer new").name == "carol"
