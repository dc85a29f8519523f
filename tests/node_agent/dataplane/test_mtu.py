"""The pod MTU follows the underlay's (node_agent/dataplane/mtu.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from knemu.config import AgentConfig
from knemu.errors import ConfigError
from knemu.node_agent.dataplane.mtu import PodMtu, UnderlayLink, choose_pod_mtu, find_link

# `ip -j addr show` in a Swarm node task: loopback, then the overlay underlay (MTU 1450).
IP_ADDR_JSON = json.dumps(
    [
        {"ifindex": 1, "ifname": "lo", "mtu": 65536,
         "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
        {"ifindex": 40, "ifname": "eth0", "mtu": 1450,
         "addr_info": [{"family": "inet", "local": "10.0.7.3", "prefixlen": 24},
                       {"family": "inet", "local": "10.0.7.2", "prefixlen": 32}]},
    ]
)  # fmt: skip


@pytest.mark.parametrize(
    ("link_mtu", "pod_mtu"),
    [(1500, 1450), (1450, 1400), (9001, 8951), (65536, 9000), (626, 576)],
)
def test_pod_mtu_is_the_underlay_mtu_minus_vxlan(link_mtu: int, pod_mtu: int) -> None:
    chosen = choose_pod_mtu(0, "10.0.7.3", UnderlayLink("eth0", link_mtu))
    assert chosen.mtu_bytes == pod_mtu
    assert f"eth0 MTU {link_mtu} minus 50" in chosen.reason
    assert ("capped" in chosen.reason) == (link_mtu - 50 > 9000)


def test_explicit_mtu_wins_and_unknown_link_falls_back_to_1450() -> None:
    assert choose_pod_mtu(1300, "10.0.7.3", UnderlayLink("eth0", 1450)) == PodMtu(
        1300, "set explicitly (--mtu)"
    )
    fallback = choose_pod_mtu(0, "10.0.7.9", None)
    assert fallback.mtu_bytes == 1450 and "10.0.7.9" in fallback.reason


def test_too_small_underlay_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"eth0 has MTU 600.*set --mtu"):
        choose_pod_mtu(0, "10.0.7.3", UnderlayLink("eth0", 600))


def test_find_link_by_any_address_of_the_interface() -> None:
    assert find_link(IP_ADDR_JSON, "10.0.7.2") == UnderlayLink("eth0", 1450)
    assert find_link(IP_ADDR_JSON, "127.0.0.1") == UnderlayLink("lo", 65536)
    assert find_link(IP_ADDR_JSON, "192.168.1.1") is None


@given(st.text(max_size=200))
def test_find_link_never_crashes_on_garbage(text: str) -> None:
    result = find_link(text, "10.0.7.3")
    assert result is None or isinstance(result, UnderlayLink)


KEYS = st.sampled_from(["ifname", "mtu", "addr_info", "local"])
JSONISH = st.recursive(
    st.none() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner) | st.dictionaries(KEYS, inner),
)


@given(JSONISH)
def test_find_link_never_crashes_on_odd_json(value: object) -> None:
    result = find_link(json.dumps(value), "10.0.7.3")
    assert result is None or isinstance(result, UnderlayLink)


def test_config_mtu_zero_means_from_the_underlay() -> None:
    assert AgentConfig().pod_mtu_bytes == 0
    assert AgentConfig.from_mapping({"pod_mtu_bytes": 1400}).pod_mtu_bytes == 1400
    with pytest.raises(ConfigError, match="between 576 and 9000"):
        AgentConfig.from_mapping({"pod_mtu_bytes": 100})


def test_parts_run_without_an_agent_see_1450_until_it_is_resolved() -> None:
    assert AgentConfig().pod_mtu_or_default == 1450
    assert AgentConfig(pod_mtu_bytes=1400).pod_mtu_or_default == 1400
