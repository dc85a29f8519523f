"""Flow log ring buffer, subscribers, and events off unless a sink is set."""

from __future__ import annotations

import json

from knemu.node_agent.dataplane.flows import FlowLog
from knemu.node_agent.dataplane.router import Router
from knemu.node_agent.events import FlowDropped, FlowEvent, FlowForwarded

from .._cluster import POD_A, POD_B, node, pair, syn


def _ev(i: int) -> FlowEvent:
    return FlowDropped(float(i), "node-1", "from-pod", None, reason=f"r{i}")


def test_ring_keeps_newest_and_counts_overwrites() -> None:
    log = FlowLog(capacity=3)
    for i in range(5):
        log.append(_ev(i))
    assert [e.time for e in log.recent()] == [2.0, 3.0, 4.0]
    assert [e.time for e in log.recent(2)] == [3.0, 4.0]
    assert log.statistics()["flow_events_overwritten"] == 2


def test_subscribers_filters_and_broken_subscriber_removed() -> None:
    log = FlowLog()
    got: list[FlowEvent] = []
    token = log.subscribe(got.append, match=lambda e: e.time >= 1.0)

    def broken(_: FlowEvent) -> None:
        raise RuntimeError("reader bug")

    log.subscribe(broken)
    log.append(_ev(0))
    log.append(_ev(1))
    assert [e.time for e in got] == [1.0]
    assert log.statistics()["flow_subscriber_errors"] == 1
    log.unsubscribe(token)
    log.append(_ev(2))
    assert len(got) == 1 and log.statistics()["flow_subscribers"] == 0


def test_router_events_through_the_log_are_json() -> None:
    p = pair()
    log = FlowLog()
    p.r1.verdicts.sink = log.append
    p.r1.handle_pod("a", syn(POD_A, POD_B, 1, 2), 1.0)
    (event,) = log.recent()
    assert isinstance(event, FlowForwarded)
    line = json.dumps(event.to_dict())
    assert '"verdict": "FORWARDED"' in line and '"point": "encap"' in line


def test_no_sink_no_events() -> None:
    r = Router(node(1))
    r.add_local_pod(POD_A, "a")
    assert r.handle_pod("a", syn(POD_A, "10.244.1.1", 1, 2), 1.0) is not None
    assert r.verdicts.sink is None and r.statistics()["to_host"] == 1


def test_subscriber_may_unsubscribe_while_called() -> None:
    log = FlowLog()
    got: list[FlowEvent] = []
    tokens: list[int] = []

    def once(event: FlowEvent) -> None:
        got.append(event)
        log.unsubscribe(tokens[0])

    tokens.append(log.subscribe(once))
    log.append(_ev(0))
    log.append(_ev(1))
    assert len(got) == 1 and log.statistics()["flow_subscriber_errors"] == 0
