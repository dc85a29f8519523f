"""`knemu console` against a fake REST client (the page itself: tests/apiserver/console/)."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from knemu.cli.commands import console
from knemu.pki import Credentials


class FakeClient:
    server = "https://192.0.2.10:6443"
    credentials = Credentials(server)

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []

    def request(self, method: str, path: str) -> dict[str, Any]:
        self.requests.append((method, path))
        return {"gitVersion": "v1.30.0"}


def test_console_prints_the_url_of_the_server(capsys: pytest.CaptureFixture[str]) -> None:
    client = FakeClient()
    args = argparse.Namespace(client=client, open=False)
    assert console.run(args) == 0
    assert capsys.readouterr().out == "https://192.0.2.10:6443/console/\n"
    assert client.requests == [("GET", "/version")]  # it checked the server answers first


def test_with_a_token_the_url_signs_in(capsys: pytest.CaptureFixture[str]) -> None:
    client = FakeClient()
    client.credentials = Credentials(client.server, token="abc/def")
    assert console.run(argparse.Namespace(client=client, open=False)) == 0
    out = capsys.readouterr().out
    assert out == "https://192.0.2.10:6443/console/login#token=abc%2Fdef\n"
