"""The CNI conflist an agent writes: the plugin chain it implements, built from its config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from knemu.config import AgentConfig
from knemu.node_agent.cni import conflist as cni


def build(config: AgentConfig | None = None) -> dict[str, Any]:
    return cni.conflist(config or AgentConfig(), "node-2", "10.244.2.0/24", "10.244.2.1")


def test_the_chain_is_knemu_then_portmap_as_in_seed_001() -> None:
    conf = build()
    assert (conf["cniVersion"], conf["name"]) == ("1.0.0", "knemu")
    plugin, portmap = conf["plugins"]
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}}
    assert plugin["type"] == "knemu" and plugin["nodename"] == "node-2"
    assert plugin["mtu"] == 1450 and plugin["vxlan"] == {"port": 4789, "vni": 1}
    assert plugin["ipam"] == {
        "type": "host-local",
        "subnet": "usePodCidr",
        "ranges": [[{"subnet": "10.244.2.0/24", "rangeStart": "10.244.2.2",
                     "rangeEnd": "10.244.2.254", "gateway": "10.244.2.1"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
    }  # fmt: skip


def test_values_follow_the_agent_config() -> None:
    conf = build(AgentConfig(pod_mtu_bytes=1400, vxlan_port=8472, vni=42, host_ports=False))
    plugins = conf["plugins"]
    assert [p["type"] for p in plugins] == ["knemu"]
    assert plugins[0]["mtu"] == 1400
    assert plugins[0]["vxlan"] == {"port": 8472, "vni": 42}


def test_policy_section_only_when_network_policy_is_enforced() -> None:
    assert build()["plugins"][0]["policy"] == {"type": "k8s"}
    off = AgentConfig(network_policy=False)
    assert "policy" not in build(off)["plugins"][0]


def test_host_local_range_leaves_out_a_gateway_at_the_top() -> None:
    ipam = cni.host_local_ipam("10.244.3.0/29", "10.244.3.6")
    assert ipam["ranges"] == [[{"subnet": "10.244.3.0/29", "rangeStart": "10.244.3.1",
                                "rangeEnd": "10.244.3.5", "gateway": "10.244.3.6"}]]  # fmt: skip


def test_conf_dir_never_touches_etc_for_an_agent_with_its_own_state_dir(tmp_path: Path) -> None:
    assert cni.conf_dir(AgentConfig()) == Path("/etc/cni/net.d")  # compose: its own /etc
    mine = AgentConfig(state_dir=str(tmp_path / "node-1"))
    assert cni.conf_dir(mine) == tmp_path / "node-1" / "cni" / "net.d"  # knemu up, tests
    explicit = AgentConfig(state_dir=str(tmp_path), cni_conf_dir=str(tmp_path / "x"))
    assert cni.conf_dir(explicit) == tmp_path / "x"


def test_install_writes_valid_json_and_replaces_an_old_file(tmp_path: Path) -> None:
    config = AgentConfig(state_dir=str(tmp_path))
    old = tmp_path / "cni" / "net.d" / "10-knemu.conflist"
    old.parent.mkdir(parents=True)
    old.write_text("stale")
    written = cni.install(config, "node-2", "10.244.2.0/24", "10.244.2.1")
    assert written.path == old
    assert json.loads(old.read_text()) == json.loads(written.text) == build(config)
    assert sorted(p.name for p in old.parent.iterdir()) == ["10-knemu.conflist"]


def test_install_into_an_unwritable_place_still_serves_the_list(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = AgentConfig(state_dir=str(tmp_path), cni_conf_dir=str(blocker / "net.d"))
    written = cni.install(config, "node-2", "10.244.2.0/24", "10.244.2.1")
    assert written.path is None and json.loads(written.text)["name"] == "knemu"
