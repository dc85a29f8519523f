"""Attach rules (sans-I/O): query options, refusals, the stdinOnce rule; Container fields."""

from __future__ import annotations

import itertools

import pytest

from knemu.apiserver.grpc_api.convert import pod_to_proto
from knemu.errors import LocalError
from knemu.node_agent.runtime.attach_rules import AttachOptions, StdinCore, check_attach
from knemu.node_agent.runtime.containers import ContainerCore, exit_code


def test_options_from_query() -> None:
    opts = AttachOptions.from_query({"stdin": "true", "stdout": "1", "stderr": "false"})
    assert opts == AttachOptions(stdin=True, stdout=True, stderr=False, from_start=False)
    assert opts.output_channel == 1
    assert AttachOptions.from_query({"stderr": "True", "fromStart": "1"}).output_channel == 2
    assert AttachOptions.from_query({"stdin": "1"}).output_channel is None
    assert AttachOptions.from_query({"stdout": "1", "fromStart": "true"}).from_start


@pytest.mark.parametrize("query", [{}, {"stdin": "0", "stdout": "no"}, {"fromStart": "1"}])
def test_options_need_a_stream(query: dict[str, str]) -> None:
    with pytest.raises(LocalError, match="at least 1 of stdin, stdout, stderr"):
        AttachOptions.from_query(query)


def test_check_attach() -> None:
    both = AttachOptions(stdin=True, stdout=True)
    check_attach(both, "default/p", "c", declares_stdin=True, state="running")
    check_attach(AttachOptions(stdout=True), "default/p", "c", declares_stdin=False,
                 state="running")  # fmt: skip
    with pytest.raises(LocalError, match="stdin is /dev/null; attach without -i"):
        check_attach(both, "default/p", "c", declares_stdin=False, state="running")
    for state in ("waiting", "terminated"):
        with pytest.raises(LocalError, match=f"it is {state}, not running.*knemu logs p -c c"):
            check_attach(both, "default/p", "c", declares_stdin=True, state=state)


@pytest.mark.parametrize(("once", "closed"), list(itertools.product((False, True), repeat=2)))
def test_stdin_core_every_state(once: bool, closed: bool) -> None:
    """Every (stdinOnce, closed) state against a session's end, the only input."""
    core = StdinCore(once=once, closed=closed)
    must_close = core.on_session_stdin_ended()
    assert must_close is (once and not closed)  # only the first end, and only with stdinOnce
    assert core.closed is (closed or once)
    assert core.on_session_stdin_ended() is False  # a second end changes nothing


def test_exit_code_reports_signals_like_a_runtime() -> None:
    assert [exit_code(rc) for rc in (0, 3, -9, -15)] == [0, 3, 137, 143]
    core = ContainerCore("c", restart_policy="Never")
    core.on_exited(-9, now=1.0)
    assert (core.exit_code, core.reason) == (137, "Error")


def test_container_stdin_fields_reach_the_agent() -> None:
    containers = [
        {"name": "a", "image": "tools", "stdin": True, "stdinOnce": True},
        {"name": "b", "image": "tools", "stdin": "yes"},  # not a boolean: the default
        {"name": "c", "image": "tools"},
    ]
    pod = pod_to_proto(
        {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": containers}}
    )
    assert [(c.stdin, c.stdin_once) for c in pod.containers] == [
        (True, True),
        (False, False),
        (False, False),
    ]
