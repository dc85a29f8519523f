"""The link state machine over every (state, input) pair, and the cache reducer."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings, strategies as st

from knemu.proto import knemu_pb2 as pb
from knemu.proto.client import Backoff
from knemu.proto.state import (
    TRANSITIONS,
    Change,
    LinkInput,
    LinkState,
    WatchCache,
    WatchProtocolError,
    input_of,
    next_state,
)

S, In = LinkState, LinkInput
EXPECTED = {
    (S.DISCONNECTED, In.DIAL): S.CONNECTING,
    (S.DISCONNECTED, In.OBJECT_EVENT): None,
    (S.DISCONNECTED, In.SYNCED_MARK): None,
    (S.DISCONNECTED, In.RELIST): None,
    (S.DISCONNECTED, In.BROKEN): None,
    (S.CONNECTING, In.DIAL): None,
    (S.CONNECTING, In.OBJECT_EVENT): S.SYNCING,
    (S.CONNECTING, In.SYNCED_MARK): S.SYNCED,
    (S.CONNECTING, In.RELIST): S.DISCONNECTED,
    (S.CONNECTING, In.BROKEN): S.DISCONNECTED,
    (S.SYNCING, In.DIAL): None,
    (S.SYNCING, In.OBJECT_EVENT): S.SYNCING,
    (S.SYNCING, In.SYNCED_MARK): S.SYNCED,
    (S.SYNCING, In.RELIST): S.DISCONNECTED,
    (S.SYNCING, In.BROKEN): S.DISCONNECTED,
    (S.SYNCED, In.DIAL): None,
    (S.SYNCED, In.OBJECT_EVENT): S.SYNCED,
    (S.SYNCED, In.SYNCED_MARK): None,  # one SYNCED per stream
    (S.SYNCED, In.RELIST): S.DISCONNECTED,
    (S.SYNCED, In.BROKEN): S.DISCONNECTED,
}


def test_expected_table_covers_every_pair() -> None:
    assert set(EXPECTED) == set(itertools.product(LinkState, LinkInput))
    assert {k: v for k, v in EXPECTED.items() if v is not None} == TRANSITIONS


@pytest.mark.parametrize(
    ("state", "event"), sorted(EXPECTED, key=lambda k: (k[0].value, k[1].value))
)
def test_every_state_and_input(state: LinkState, event: LinkInput) -> None:
    expected = EXPECTED[(state, event)]
    if expected is None:
        with pytest.raises(WatchProtocolError, match=f"{event.value}.*{state.value}"):
            next_state(state, event)
    else:
        assert next_state(state, event) is expected


def test_input_of_each_event_type() -> None:
    T = pb.WatchEvent
    assert [input_of(T(type=t)) for t in (T.ADDED, T.MODIFIED, T.DELETED)] == [In.OBJECT_EVENT] * 3
    assert input_of(T(type=T.SYNCED)) is In.SYNCED_MARK
    assert input_of(T(type=T.RELIST)) is In.RELIST
    with pytest.raises(WatchProtocolError, match="unknown type"):
        input_of(T(type=T.TYPE_UNSPECIFIED))


def ev(etype: int, rv: int, name: str = "", label: str = "") -> pb.WatchEvent:
    if etype in (pb.WatchEvent.SYNCED, pb.WatchEvent.RELIST):
        return pb.WatchEvent(type=etype, resource_version=rv)
    meta = pb.ObjectMeta(name=name, namespace="default", resource_version=rv, labels={"l": label})
    return pb.WatchEvent(
        type=etype, resource_version=rv, object=pb.Object(pod=pb.Pod(metadata=meta))
    )


A, M, D, SY = (
    pb.WatchEvent.ADDED,
    pb.WatchEvent.MODIFIED,
    pb.WatchEvent.DELETED,
    pb.WatchEvent.SYNCED,
)


def summary(changes: list[Change]) -> list[tuple[str, str, str | None]]:
    return [
        (c.type, c.obj.metadata.name, None if c.old is None else c.old.metadata.labels["l"])
        for c in changes
    ]


def test_cache_resume_applies_in_order_and_skips_duplicates() -> None:
    cache = WatchCache()
    cache.begin(0)
    assert cache.apply(ev(A, 1, "a")) == []  # collected until SYNCED
    assert summary(cache.apply(ev(SY, 1))) == [("ADDED", "a", None)]
    cache.begin(1)
    assert summary(cache.apply(ev(M, 2, "a", "v2"))) == [("MODIFIED", "a", "")]
    assert cache.apply(ev(M, 2, "a", "v2")) == []  # duplicate rv
    assert summary(cache.apply(ev(D, 3, "a", "v2"))) == [("DELETED", "a", "v2")]
    assert cache.apply(ev(SY, 5)) == [] and cache.last_rv == 5
    assert cache.list("Pod") == []


def test_cache_relist_diff_emits_only_real_changes() -> None:
    cache = WatchCache()
    cache.begin(0)
    for i, name in enumerate(["keep", "change", "gone"], start=1):
        cache.apply(ev(A, i, name, "old"))
    cache.apply(ev(SY, 3))
    cache.begin(0)  # after RELIST
    cache.apply(ev(A, 1, "keep", "old"))
    cache.apply(ev(A, 9, "change", "new"))
    cache.apply(ev(A, 10, "fresh", "new"))
    changes = cache.apply(ev(SY, 12))
    assert summary(changes) == [
        ("DELETED", "gone", "old"),
        ("MODIFIED", "change", "old"),
        ("ADDED", "fresh", None),
    ]
    assert [p.metadata.name for p in cache.list("Pod")] == ["change", "fresh", "keep"]
    assert cache.last_rv == 12


def test_cache_rejects_event_without_object() -> None:
    cache = WatchCache()
    cache.begin(1)
    with pytest.raises(WatchProtocolError, match="without an object"):
        cache.apply(pb.WatchEvent(type=A, resource_version=2))


def test_backoff_is_capped_seeded_and_resets() -> None:
    one, two = Backoff(0.1, 2.0, seed=7), Backoff(0.1, 2.0, seed=7)
    delays = [one.next_delay_s() for _ in range(12)]
    assert delays == [two.next_delay_s() for _ in range(12)]
    for n, d in enumerate(delays):
        ceiling = min(2.0, 0.1 * 2**n)
        assert ceiling / 2 <= d <= ceiling
    one.reset()
    assert one.next_delay_s() <= 0.1


# ---- model test: resume and relist both converge, emitting exactly the real changes --------

Op = tuple[str, str]  # ("put" | "del", name)


def _history(ops: list[Op]) -> list[pb.WatchEvent]:
    """Store-like events for ``ops``: rv 1, 2, ...; deleting a missing name is skipped."""
    live: set[str] = set()
    events = []
    for op, name in ops:
        if op == "del" and name not in live:
            continue
        rv = len(events) + 1
        etype = D if op == "del" else (M if name in live else A)
        (live.discard if op == "del" else live.add)(name)
        events.append(ev(etype, rv, name, str(rv)))
    return events


def _state(events: list[pb.WatchEvent]) -> dict[str, int]:
    state: dict[str, int] = {}
    for e in events:
        if e.type == D:
            state.pop(e.object.pod.metadata.name, None)
        else:
            state[e.object.pod.metadata.name] = e.resource_version
    return state


def _snapshot(events: list[pb.WatchEvent]) -> list[pb.WatchEvent]:
    state = _state(events)
    by_rv = {e.resource_version: e for e in events}
    return [
        ev(A, rv, name, by_rv[rv].object.pod.metadata.labels["l"]) for name, rv in state.items()
    ]


_ops = st.lists(
    st.tuples(st.sampled_from(["put", "put", "del"]), st.sampled_from(["a", "b", "c", "d"])),
    max_size=25,
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(ops=_ops, cut=st.integers(0, 25), relist=st.booleans())
def test_resume_or_relist_converges_with_exact_changes(
    ops: list[Op], cut: int, relist: bool
) -> None:
    events = _history(ops)
    cut = min(cut, len(events))
    cache = WatchCache()
    cache.begin(0)  # first list at rv `cut`
    for e in _snapshot(events[:cut]):
        cache.apply(e)
    cache.apply(ev(SY, cut))
    mirror = {k[2]: m.metadata.resource_version for k, m in cache.objects.items()}
    assert mirror == _state(events[:cut])
    if relist:
        cache.begin(0)
        feed = [*_snapshot(events), ev(SY, len(events))]
    else:
        cache.begin(cut)
        feed = [*events[cut:], ev(SY, len(events))]
    changes = [c for e in feed for c in cache.apply(e)]
    for c in changes:  # the changes alone take a watcher from the old state to the new
        if c.type == "DELETED":
            assert mirror.pop(c.obj.metadata.name) == c.old.metadata.resource_version
        else:
            assert (c.old is None) == (c.type == "ADDED")
            mirror[c.obj.metadata.name] = c.obj.metadata.resource_version
    final = _state(events)
    assert mirror == final
    assert {k[2]: m.metadata.resource_version for k, m in cache.objects.items()} == final
    if relist:  # a relist reports only what differs: at most one change per object
        names = [c.obj.metadata.name for c in changes]
        assert len(names) == len(set(names))
        unchanged = {n for n, rv in _state(events[:cut]).items() if final.get(n) == rv}
        assert not unchanged & set(names)
