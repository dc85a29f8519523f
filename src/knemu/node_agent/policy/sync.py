"""The agent's NetworkPolicy wiring (sans-I/O): watched objects -> policy engine -> router gate.

Like Calico's Felix, the agent watches NetworkPolicies, Namespaces (their labels are what
namespaceSelectors match) and Pods, keeps the engine (``policy.engine.PolicyEngine``) current, and
gives the router its gate only while some local pod is isolated, so a node without policies
for its pods pays one check per packet.  Pods running here are also fed by the pod runtime
(``set_local_pod``) the moment they are wired to the router, before the api-server has their
IP, so a pod is policed from its first packet.  ``AgentConfig.network_policy = False`` (``knemu
agent --no-network-policy``) leaves all this out: the node forwards everything, like flannel.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from knemu.node_agent.kubeproxy.conntrack import CtTimeouts
from knemu.node_agent.policy.engine import PolicyEngine
from knemu.node_agent.policy.gate import PolicyGate
from knemu.proto import knemu_pb2 as pb

log = logging.getLogger(__name__)

POLICY_KINDS = ("NetworkPolicy", "Namespace")  # watched on top of the agent's own kinds


class GateSlot(Protocol):
    """Where the gate goes: the router, which consults it only while it is set."""

    def set_policy_gate(self, gate: PolicyGate | None) -> None: ...


class PolicySync:
    """``timeouts``: the router's conntrack timeouts (allowed connections expire alike)."""

    def __init__(
        self,
        router: GateSlot,
        node_name: str,
        gateway_ip: str,
        timeouts: CtTimeouts | None = None,
    ) -> None:
        self.router = router
        self.engine = PolicyEngine(node_name, dns_ip=gateway_ip)
        self.gate = PolicyGate(self.engine, gateway_ip, timeouts or CtTimeouts())
        self.active = False
        self._handlers: dict[str, Callable[[bool, Any], None]] = {
            "NetworkPolicy": self._handle_network_policy,
            "Namespace": self._handle_namespace,
            "Pod": self._handle_pod,
        }

    def on_watch(self, type_: str, kind: str, obj: Any) -> None:
        """An informer change (ADDED / MODIFIED / DELETED) of a kind policy depends on."""
        handler = self._handlers.get(kind)
        if handler is None:
            return
        handler(type_ == "DELETED", obj)
        self._push()

    def set_local_pod(self, key: str, ip: str | None) -> None:
        """A pod wired to the router here (its IP), or unwired (None)."""
        self.engine.set_local_ip(key, ip)
        self._push()

    def _handle_network_policy(self, deleted: bool, np: pb.NetworkPolicy) -> None:
        if deleted:
            self.engine.remove_policy(f"{np.metadata.namespace}/{np.metadata.name}")
        else:
            self.engine.set_policy(np)

    def _handle_namespace(self, deleted: bool, ns: pb.Namespace) -> None:
        if deleted:
            self.engine.remove_namespace(ns.metadata.name)
        else:
            self.engine.set_namespace(ns)

    def _handle_pod(self, deleted: bool, pod: pb.Pod) -> None:
        if deleted:
            self.engine.remove_pod(f"{pod.metadata.namespace}/{pod.metadata.name}")
        else:
            self.engine.set_pod(pod)

    def _push(self) -> None:
        """Hand the router its gate while a local pod is isolated; take it back otherwise."""
        active = bool(self.engine.tracked)
        if active == self.active:
            return
        self.active = active
        self.router.set_policy_gate(self.gate if active else None)
        if not active:
            self.gate.clear()  # no connection is tracked while the gate is off
        log.info("network policy: %s", "enforcing" if active else "no local pod is isolated")

    def snapshot(self) -> dict[str, Any]:
        """For ``GET /table``: policies, isolated local pods, allowed connections."""
        return {"enforced": True, "active": self.active, **self.engine.snapshot(),
                **self.gate.snapshot()}  # fmt: skip
