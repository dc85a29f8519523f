"""The masquerade of pods' traffic to the api-server (the kernel part runs in the cluster
tests: tests/ingress/test_ingress_cluster.py's controller pods reach the api-server)."""

from __future__ import annotations

from knemu.node_agent.dataplane.egress import rule_args


def test_only_pod_traffic_to_the_control_plane_address_is_masqueraded() -> None:
    args = rule_args("-A", "10.244.0.0/16", "192.168.59.1")
    assert args[:4] == ["-t", "nat", "-A", "POSTROUTING"]
    assert args[args.index("-s") + 1] == "10.244.0.0/16"
    assert args[args.index("-d") + 1] == "192.168.59.1/32"
    assert args[-2:] == ["-j", "MASQUERADE"]
    assert rule_args("-D", "10.244.0.0/16", "192.168.59.1")[2] == "-D"
