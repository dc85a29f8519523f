"""`knemu` dispatch: the subcommand table, global flags, and error reporting."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import knemu.cli as cli
from knemu.cli import Command, main
from knemu.cli.client import ApiClient, resolve_kind
from knemu.testing import free_port


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in cli.TABLE:
        assert command.name in out


def test_every_command_names_two_functions_that_exist() -> None:
    for command in cli.TABLE:
        for name in (command.add_arguments, command.run):
            module, _, function = name.partition(":")
            loaded = importlib.import_module(f"{cli.COMMANDS_PACKAGE}.{module}")
            assert callable(getattr(loaded, function, None)), f"{command.name}: {name}"


def test_missing_module_gives_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ghost = Command("ghost", "kt_no_such_module:add_arguments", "kt_no_such_module:run", "x")
    monkeypatch.setattr(cli, "TABLE", (*cli.TABLE, ghost))
    monkeypatch.setitem(cli._BY_NAME, "ghost", ghost)
    assert main(["ghost"]) == 1
    err = capsys.readouterr().err
    assert "knemu ghost is not available" in err and "kt_no_such_module" in err
    assert main(["get", "--help"]) == 0  # other commands are unaffected


def test_unknown_kind_lists_known_kinds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["get", "--server", "http://127.0.0.1:1", "widgets"]) == 1
    err = capsys.readouterr().err
    assert 'resource type "widgets"' in err and "services (svc)" in err


def test_unreachable_server_names_url_and_hint(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("KNEMU_SERVER", url)
    assert main(["get", "pods"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot reach the api-server at {url}: ")
    assert "knemu up / docker compose up" in err


def test_server_flag_before_or_after_the_subcommand(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[str] = []

    def fake_run(args: object) -> int:
        seen.append(args.server)
        assert isinstance(args.client, ApiClient)
        return 0

    monkeypatch.setattr("knemu.cli.commands.get.run", fake_run)
    monkeypatch.delenv("KNEMU_SERVER", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))  # no kubeconfig: the default
    assert main(["--server", "http://a:1", "get", "pods"]) == 0
    assert main(["get", "pods", "--server", "http://b:2"]) == 0
    assert main(["get", "pods"]) == 0
    assert seen == ["http://a:1", "http://b:2", "https://127.0.0.1:6443"]


def test_bad_usage_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["get"]) == 2
    assert main(["nonsense-command"]) == 2
    assert main(["get", "pods", "-o", "table"]) == 1
    assert "unable to match a printer" in capsys.readouterr().err


def test_kind_aliases() -> None:
    for alias in ("po", "pod", "pods", "Pod"):
        assert resolve_kind(alias).kind == "Pod"
    for alias, kind in [
        ("svc", "Service"),
        ("ep", "Endpoints"),
        ("deploy", "Deployment"),
        ("deployments.apps", "Deployment"),
        ("rs", "ReplicaSet"),
        ("no", "Node"),
        ("ns", "Namespace"),
        ("ev", "Event"),
        ("endpointslices", "EndpointSlice"),
        ("netpol", "NetworkPolicy"),
    ]:
        assert resolve_kind(alias).kind == kind
    assert (
        resolve_kind("deploy").collection_path("web") == "/apis/apps/v1/namespaces/web/deployments"
    )
    assert resolve_kind("no").object_path("ignored", "node-1") == "/api/v1/nodes/node-1"


def test_python_dash_m_entry_point() -> None:
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = dict(os.environ, PYTHONPATH=src)
    done = subprocess.run(
        [sys.executable, "-m", "knemu.cli", "get", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and "--all-namespaces" in done.stdout
