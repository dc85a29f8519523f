"""The pure parts of externalTrafficPolicy Local steering (the kernel part runs in the netns
tests)."""

from __future__ import annotations

from knemu.node_agent.dataplane.steering import (
    LOCAL_PREF,
    RULE_PREF,
    TABLE,
    address_args,
    local_rule_at,
    rule_args,
    setup_args,
)

RULES = "0:\tfrom all lookup local\n32766:\tfrom all lookup main\n32767:\tfrom all lookup default\n"


def test_rule_steers_one_port_from_the_underlay_interface() -> None:
    assert rule_args("add", "eth0", ("TCP", 30080)) == [
        "rule", "add", "pref", str(RULE_PREF), "iif", "eth0", "ipproto", "tcp",
        "dport", "30080", "lookup", str(TABLE),
    ]  # fmt: skip
    assert RULE_PREF < LOCAL_PREF


def test_local_table_is_added_behind_the_rules_before_it_leaves_preference_0() -> None:
    args = setup_args("knemu0")
    assert args[0] == ["route", "replace", "default", "dev", "knemu0", "table", str(TABLE)]
    add = args.index(["rule", "add", "pref", str(LOCAL_PREF), "lookup", "local"])
    delete = args.index(["rule", "del", "pref", "0", "lookup", "local"])
    assert add < delete


def test_local_rule_is_found_at_its_exact_preference() -> None:
    assert local_rule_at(RULES, 0) and not local_rule_at(RULES, LOCAL_PREF)
    moved = RULES.replace("0:\tfrom all lookup local", f"{LOCAL_PREF}:\tfrom all lookup local")
    assert local_rule_at(moved, LOCAL_PREF) and not local_rule_at(moved, 0)
    assert not local_rule_at("32766:\tfrom all lookup main\n", 0)


def test_an_announced_address_is_added_before_its_rules_and_only_tcp_udp_are_steered() -> None:
    add = address_args("add", "eth0", "knemu0", "192.0.2.50")
    assert add[0] == ["addr", "add", "192.0.2.50/32", "dev", "knemu0"]
    protos = [a[a.index("ipproto") + 1] for a in add[1:]]
    assert protos == ["tcp", "udp"]  # never every protocol: ARP must still find it local
    assert all(a[a.index("to") + 1] == "192.0.2.50/32" for a in add[1:])
    delete = address_args("del", "eth0", "knemu0", "192.0.2.50")
    assert delete[-1] == ["addr", "del", "192.0.2.50/32", "dev", "knemu0"]
