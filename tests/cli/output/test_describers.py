"""`knemu describe networkpolicy` reads like kubectl's NetworkPolicyDescriber."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from knemu.cli.manifests import load_paths
from knemu.cli.output.describe_layout import Writer
from knemu.cli.output.describers import describe_network_policy

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "network-policy"


def describe(obj: dict[str, Any]) -> str:
    obj.setdefault("metadata", {}).update(
        namespace="default", creationTimestamp="2026-11-21T12:00:00Z"
    )
    w = Writer()
    describe_network_policy(None, obj, w, 0.0)  # type: ignore[arg-type]  # no client needed
    return w.render()


def example(name: str) -> dict[str, Any]:
    (doc,) = load_paths([str(EXAMPLES / name)])
    return doc.obj


def test_anded_peer_and_port_as_kubectl_prints_them() -> None:
    assert describe(example("allow-sample-app-from-frontend-team.yaml")) == (
        "Name:         allow-sample-app-from-frontend-team\n"
        "Namespace:    default\n"
        "Created on:   2026-11-21 12:00:00 +0000 UTC\n"
        "Labels:       <none>\n"
        "Annotations:  <none>\n"
        "Spec:\n"
        "  PodSelector:     app=sample-app\n"
        "  Allowing ingress traffic:\n"
        "    To Port: 80/TCP\n"
        "    From:\n"
        "      NamespaceSelector: team=frontend\n"
        "      PodSelector: role=frontend\n"
        "  Not affecting egress traffic\n"
        "  Policy Types: Ingress\n"
    )


def test_deny_all_any_port_ip_blocks_and_expressions() -> None:
    out = describe(example("default-deny-ingress.yaml"))
    assert "    <none> (Selected pods are isolated for ingress connectivity)\n" in out
    policy = {
        "metadata": {"name": "mixed"},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {}, {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]},
            ],
            "egress": [{"to": [{"podSelector": {"matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["web", "api"]},
                {"key": "legacy", "operator": "DoesNotExist"}]}}],
                "ports": [{"port": 32000, "endPort": 32768, "protocol": "UDP"}]}],
        },
    }  # fmt: skip
    out = describe(policy)
    assert (
        "  PodSelector:     <none> (Allowing the specific traffic to all pods in this namespace)\n"
        in out
    )
    assert (
        "    To Port: <any> (traffic allowed to all ports)\n"
        "    From: <any> (traffic not restricted by source)\n"
        "    ----------\n"
        "    To Port: <any> (traffic allowed to all ports)\n"
        "    From:\n"
        "      IPBlock:\n"
        "        CIDR: 10.0.0.0/8\n"
        "        Except: 10.1.0.0/16\n"
    ) in out
    assert (
        "  Allowing egress traffic:\n"
        "    To Port: 32000-32768/UDP\n"
        "    To:\n"
        "      PodSelector: tier in (api,web),!legacy\n"
        "  Policy Types: Ingress, Egress\n"
    ) in out
