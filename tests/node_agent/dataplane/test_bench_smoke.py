"""bench/bench_router.py still runs (tiny numbers: a smoke test, not a measurement)."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "bench_router.py"


def test_bench_runs_and_reports_the_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    module = runpy.run_path(str(BENCH))
    assert module["main"](["--packets", "200", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "10k/10 ratio" in out and "plain cross-node forwarding" in out


def test_bench_backends_router_figure_runs_for_every_setup() -> None:
    """bench/bench_backends.py's sans-I/O part (the clusters need root and minutes): each
    setup carries packets through two routers and delivers every one."""
    module = runpy.run_path(str(BENCH.with_name("bench_backends.py")))
    for backend, encryption in module["SETUPS"].values():
        assert module["router_us_per_packet"](backend, encryption, packets=50) > 0
