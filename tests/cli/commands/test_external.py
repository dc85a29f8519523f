"""`knemu external -- CMD`: refusals that need no cluster (the netns tests run it for real)."""

from __future__ import annotations

from pathlib import Path

import pytest

from knemu.cli import main


def test_without_a_command_it_says_where_the_command_goes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["external", "--state-dir", str(tmp_path)]) != 0
    assert "put it after `--`" in capsys.readouterr().err


def test_without_a_cluster_it_names_the_command_that_starts_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["external", "--name", "nope", "--state-dir", str(tmp_path), "--", "true"])
    assert code != 0
    err = capsys.readouterr().err
    assert "no running cluster 'nope'" in err and "knemu up --name nope" in err
