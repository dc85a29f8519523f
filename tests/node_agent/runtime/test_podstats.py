"""Pod and node CPU/memory from /proc text: parsing, process trees, rates."""

from __future__ import annotations

from hypothesis import given, strategies as st

from knemu.node_agent.runtime.podstats import Proc, Sampler, parse_rss, parse_stat, tree

# proc(5): pid (comm) state ppid ... utime(14) stime(15) cutime(16) cstime(17) ...
STAT = "4242 (my (odd) name) S 7 4242 4242 0 -1 4194560 500 0 0 0 120 30 4 6 20 0 1 0 99 0 0"


def test_parse_stat_handles_names_with_spaces_and_parentheses() -> None:
    assert parse_stat(STAT) == (4242, 7, 120 + 30 + 4 + 6)
    assert parse_stat("") is None
    assert parse_stat("12 (x") is None


@given(st.text())
def test_parse_stat_never_raises(text: str) -> None:
    parse_stat(text)


def test_parse_rss() -> None:
    assert parse_rss("Name:\tx\nVmRSS:\t   2048 kB\n") == 2048 * 1024
    assert parse_rss("Name:\tkthreadd\n") == 0


def test_tree_follows_descendants_only() -> None:
    procs = {p.pid: p for p in (Proc(1, 0, 0, 0), Proc(10, 1, 5, 100), Proc(11, 10, 5, 200),
                                Proc(12, 11, 5, 300), Proc(20, 1, 7, 400))}  # fmt: skip
    assert sorted(p.pid for p in tree(10, procs)) == [10, 11, 12]
    assert tree(99, procs) == []


def test_sampler_rate_between_samples() -> None:
    sampler = Sampler(ticks_per_s=100)
    first = sampler.usage("c", [Proc(1, 0, 100, 4096)], now=10.0)  # 1 s of CPU so far
    assert first.cpu_ns == 1_000_000_000 and first.nano_cores == 0 and first.memory_bytes == 4096
    assert sampler.has_recent(["c"], 11.0, 60.0) and not sampler.has_recent(["d"], 11.0, 60.0)
    second = sampler.usage("c", [Proc(1, 0, 150, 4096)], now=12.0)  # +0.5 s over 2 s
    assert second.nano_cores == 250_000_000 and second.window_s == 2.0
    sampler.forget_except([])
    assert not sampler.has_recent(["c"], 12.0, 60.0)
