"""compose/stack.yaml stays the same cluster as compose/compose.yaml (no Docker needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

COMPOSE_DIR = Path(__file__).resolve().parents[2] / "compose"


def load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((COMPOSE_DIR / name).read_text())
    return loaded


def test_stack_runs_the_same_components_with_the_same_commands() -> None:
    stack, compose = load("stack.yaml")["services"], load("compose.yaml")["services"]
    assert set(stack) == set(compose) == {"apiserver", "dns", "node", "external"}
    for name in ("apiserver", "dns"):
        assert stack[name]["command"] == compose[name]["command"]
    for name in ("apiserver", "dns", "node", "external"):
        assert stack[name]["healthcheck"] == compose[name]["healthcheck"]
    assert stack["external"]["entrypoint"] == compose["external"]["entrypoint"]
    assert stack["node"]["command"] == ["-v", *compose["node"]["command"]]
    assert stack["node"]["entrypoint"] == compose["node"]["entrypoint"]
    assert set(compose["node"]["cap_add"]) < set(stack["node"]["cap_add"])
    for service in stack.values():
        assert service["image"] == "${KNEMU_IMAGE:-knemu:local}"


def test_stack_has_only_what_swarm_can_do() -> None:
    services = load("stack.yaml")["services"]
    for name, service in services.items():
        for key in ("build", "devices", "security_opt", "depends_on", "ports"):
            assert key not in service, f"{name}: swarm ignores {key}"
    node = services["node"]
    assert node["hostname"] == "{{.Service.Name}}-{{.Task.Slot}}"  # identity = slot
    assert "MKNOD" in node["cap_add"]  # the agent makes /dev/net/tun
    assert services["apiserver"]["deploy"]["placement"]["constraints"] == ["node.role == manager"]


def test_underlay_is_an_internal_attachable_overlay_like_compose() -> None:
    stack, compose = load("stack.yaml"), load("compose.yaml")
    underlay = stack["networks"]["underlay"]
    assert underlay["driver"] == "overlay" and underlay["attachable"] and underlay["internal"]
    assert underlay["ipam"] == compose["networks"]["underlay"]["ipam"]
    assert set(stack["volumes"]) == {"apiserver-data"}
