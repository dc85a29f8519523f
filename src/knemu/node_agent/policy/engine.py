"""NetworkPolicy enforcement for one node (sans-I/O): the policy engine.

Theory of operation.  Like Calico's Felix (the agent behind the seed's ``"policy": {"type":
"k8s"}``), every node enforces policy for its own pods only: egress on the node of the pod
that sends, ingress on the node of the pod that receives
(https://kubernetes.io/docs/concepts/services-networking/network-policies/).  The engine is
fed every Pod, Namespace and NetworkPolicy of the cluster and keeps, incrementally:

* one ``PeerSet`` per distinct (namespace, podSelector, namespaceSelector) peer: the IPs of the
  pods it selects, updated when a pod or a namespace's labels change (each change tests the
  one pod against each peer, not every pod against every policy);
* for each local pod, the policies that select it, per direction (``ingress`` / ``egress``,
  keyed by the pod's packed IP).  A pod in neither is not isolated, and everything goes;
  ``tracked`` holds the IPs isolated in some direction, which the router checks first.

A verdict (``allows_ingress`` / ``allows_egress``) is the union of the selecting policies'
rules: any rule whose peers include the other side and whose ports include the destination
port allows it.  Verdicts are asked once per connection (the router's gate remembers allowed
connections, so replies pass in both directions); they walk a few rules and do set lookups.

DNS.  kube-dns 10.96.0.10 is the node-local forwarder on the node's gateway (the DNAT target,
docs/INTERFACES.md "Pod DNS"), so an egress-isolated pod's query is egress to
``<gateway>:53``.  That destination counts as a pod ``kube-system/kube-dns`` with label
``k8s-app: kube-dns`` and container ports ``dns`` (53/UDP) and ``dns-tcp`` (53/TCP), CoreDNS's
own labels and port names, so the usual "allow DNS" policies (namespaceSelector kube-system +
podSelector k8s-app=kube-dns, or port 53 to anyone) work as on a real cluster; an ipBlock
peer sees the gateway address.  Other ports of the gateway are the node itself: only ipBlocks
match them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from knemu.node_agent.policy.rules import (
    NAMESPACE_NAME_LABEL,
    CompiledPolicy,
    IPBlockMatch,
    PeerKey,
    PeerSet,
    PodInfo,
    Rule,
    ip_block_of,
    matches,
    peer_key_of,
    pod_info,
    policy_types_of,
    port_of,
    selector_of,
)
from knemu.proto import knemu_pb2 as pb

DNS_PORT = 53
# The node-local kube-dns as a pod.  Its key cannot be a real pod's ("@" is not allowed in
# names) and its "IP" b"dns" (3 bytes) never equals a packet's 4-byte address.
DNS_POD = PodInfo(
    "kube-system/kube-dns@node-local", "kube-system", {"k8s-app": "kube-dns"}, b"dns", "",
    {(17, "dns"): DNS_PORT, (6, "dns-tcp"): DNS_PORT},
)  # fmt: skip
Rules = tuple[Rule, ...]


class PolicyEngine:
    """Pods, namespaces and policies in; per-local-pod verdicts out (module docstring)."""

    def __init__(self, node_name: str, dns_ip: str | None = None) -> None:
        self.node_name = node_name
        self._dns_ip = ipaddress.IPv4Address(dns_ip).packed if dns_ip else None
        self._pods: dict[str, PodInfo] = {}  # with the effective IP
        self._raw: dict[str, PodInfo] = {}  # as the api-server has them
        self._local_ips: dict[str, bytes] = {}  # the runtime's IP of pods running here
        self._by_ns: dict[str, dict[str, PodInfo]] = {}
        # Named-port lookups; two pods may briefly share an IP (one leaving, one arriving).
        self._by_ip: dict[bytes, dict[str, PodInfo]] = {}
        self._ns_labels: dict[str, dict[str, str]] = {}
        self._policies: dict[str, CompiledPolicy] = {}
        self._policies_by_ns: dict[str, dict[str, CompiledPolicy]] = {}
        # Peer sets by scope: a namespace for peers without a namespaceSelector (only that
        # namespace's pods can be members), None for the others.
        self._peers: dict[str | None, dict[PeerKey, PeerSet]] = {}
        self._selected: dict[str, dict[str, CompiledPolicy]] = {}  # local pod -> policies
        self._holders: dict[tuple[bytes, str], set[str]] = {}  # see _select
        # Local pod IP -> {policy key: its rules} for the policies isolating it that way.
        self.ingress: dict[bytes, dict[str, Rules]] = {}
        self.egress: dict[bytes, dict[str, Rules]] = {}
        self.tracked: set[bytes] = set()
        if self._dns_ip is not None:
            self._apply_pod(DNS_POD)

    # -- inputs ---------------------------------------------------------------------------------

    def set_pod(self, pod: pb.Pod) -> None:
        info = pod_info(pod)
        key = f"{pod.metadata.namespace}/{pod.metadata.name}"
        if info is None:
            self.remove_pod(key)
            return
        self._raw[key] = info
        self._refresh_pod(key)

    def remove_pod(self, key: str) -> None:
        self._raw.pop(key, None)
        self._refresh_pod(key)

    def set_local_ip(self, key: str, ip: str | None) -> None:
        """The runtime's address of a pod running here (known before the api-server's status
        comes back, so the pod is policed from its first packet); None once it stopped."""
        if ip:
            self._local_ips[key] = ipaddress.IPv4Address(ip).packed
        else:
            self._local_ips.pop(key, None)
        self._refresh_pod(key)

    def set_namespace(self, ns: pb.Namespace) -> None:
        name = ns.metadata.name
        self._ns_labels[name] = {**ns.metadata.labels, NAMESPACE_NAME_LABEL: name}
        self._recheck_namespace(name)

    def remove_namespace(self, name: str) -> None:
        self._ns_labels.pop(name, None)
        self._recheck_namespace(name)

    def set_policy(self, np: pb.NetworkPolicy) -> None:
        key = f"{np.metadata.namespace}/{np.metadata.name}"
        policy = self._compile(np)  # first: peer sets it shares with its old version stay
        self.remove_policy(key)
        self._policies[key] = policy
        self._policies_by_ns.setdefault(policy.namespace, {})[key] = policy
        for pod in self._local_pods(policy.namespace):
            if matches(policy.pod_selector, pod.labels):
                self._select(pod, policy)

    def remove_policy(self, key: str) -> None:
        policy = self._policies.pop(key, None)
        if policy is None:
            return
        group = self._policies_by_ns[policy.namespace]
        del group[key]
        if not group:
            del self._policies_by_ns[policy.namespace]
        for pod in self._local_pods(policy.namespace):
            if key in self._selected.get(pod.key, {}):
                self._unselect(pod, policy)
        for peers in policy.peer_sets:
            self._release(peers)

    # -- verdicts -------------------------------------------------------------------------------

    def allows_ingress(self, dst: bytes, src: bytes, proto: int, dport: int) -> bool:
        """May ``src`` open a connection to local pod ``dst`` on ``proto``/``dport``?  IPs are
        4 packed bytes; True when ``dst`` is not isolated for ingress."""
        policies = self.ingress.get(dst)
        if policies is None:
            return True
        addr = int.from_bytes(src, "big")
        for rules in policies.values():
            for rule in rules:
                if self._rule_allows(rule, src, addr, dst, proto, dport):
                    return True
        return False

    def allows_egress(self, src: bytes, dst: bytes, proto: int, dport: int) -> bool:
        """May local pod ``src`` open a connection to ``dst`` (after DNAT) on ``dport``?"""
        policies = self.egress.get(src)
        if policies is None:
            return True
        peer = dst
        if dst == self._dns_ip and dport == DNS_PORT and proto in (6, 17):
            peer = DNS_POD.ip  # the node-local kube-dns (module docstring)
        addr = int.from_bytes(dst, "big")
        for rules in policies.values():
            for rule in rules:
                if self._rule_allows(rule, peer, addr, peer, proto, dport):
                    return True
        return False

    def _rule_allows(
        self, rule: Rule, peer: bytes, addr: int, owner: bytes, proto: int, dport: int
    ) -> bool:
        """``peer``/``addr``: the other side as a pod key into peer sets and as an address for
        ipBlocks; ``owner``: the destination, whose container ports name the ports."""
        if rule.peers is not None and not any(
            m.contains(addr) if isinstance(m, IPBlockMatch) else peer in m.ips for m in rule.peers
        ):
            return False
        if rule.ports is None:
            return True
        for p in rule.ports:
            if p.proto != proto:
                continue
            if not p.name:
                if p.lo <= dport <= p.hi:
                    return True
                continue
            pods = self._by_ip.get(owner)
            if pods and any(pod.ports.get((proto, p.name)) == dport for pod in pods.values()):
                return True
        return False

    # -- pods -----------------------------------------------------------------------------------

    def _refresh_pod(self, key: str) -> None:
        """Re-derive a pod's effective record (the runtime's IP wins for local pods)."""
        raw = self._raw.get(key)
        if raw is not None and raw.node == self.node_name and key in self._local_ips:
            raw = replace(raw, ip=self._local_ips[key])
        old = self._pods.get(key)
        if old is not None and (raw is None or not raw.ip):
            self._remove_effective(old)
        elif raw is not None and raw.ip and raw != old:
            if old is not None and (old.ip != raw.ip or old.node != raw.node):
                self._remove_effective(old)
            self._apply_pod(raw)

    def _apply_pod(self, pod: PodInfo) -> None:
        old = self._pods.get(pod.key)
        self._pods[pod.key] = pod
        self._by_ns.setdefault(pod.namespace, {})[pod.key] = pod
        self._by_ip.setdefault(pod.ip, {})[pod.key] = pod
        ns_labels = self._namespace_labels(pod.namespace)
        for peers in self._peer_sets_for(pod.namespace):
            if peers.wants(pod, ns_labels):
                peers.add(pod.key, pod.ip)
            else:
                peers.discard(pod.key)
        if pod.node == self.node_name:
            if old is not None and old.labels != pod.labels:
                for policy in list(self._selected.get(pod.key, {}).values()):
                    if not matches(policy.pod_selector, pod.labels):
                        self._unselect(old, policy)
            for policy in self._policies_by_ns.get(pod.namespace, {}).values():
                if matches(policy.pod_selector, pod.labels):
                    self._select(pod, policy)

    def _remove_effective(self, pod: PodInfo) -> None:
        del self._pods[pod.key]
        group = self._by_ns[pod.namespace]
        del group[pod.key]
        if not group:
            del self._by_ns[pod.namespace]
        same_ip = self._by_ip[pod.ip]
        del same_ip[pod.key]
        if not same_ip:
            del self._by_ip[pod.ip]
        for peers in self._peer_sets_for(pod.namespace):
            peers.discard(pod.key)
        for policy in list(self._selected.get(pod.key, {}).values()):
            self._unselect(pod, policy)

    def _local_pods(self, namespace: str) -> list[PodInfo]:
        return [p for p in self._by_ns.get(namespace, {}).values() if p.node == self.node_name]

    def _select(self, pod: PodInfo, policy: CompiledPolicy) -> None:
        self._selected.setdefault(pod.key, {})[policy.key] = policy
        # Per (IP, policy) the local pods it stands for: two pods may briefly share an IP.
        self._holders.setdefault((pod.ip, policy.key), set()).add(pod.key)
        if policy.ingress is not None:
            self.ingress.setdefault(pod.ip, {})[policy.key] = policy.ingress
        if policy.egress is not None:
            self.egress.setdefault(pod.ip, {})[policy.key] = policy.egress
        self.tracked.add(pod.ip)

    def _unselect(self, pod: PodInfo, policy: CompiledPolicy) -> None:
        selected = self._selected[pod.key]
        del selected[policy.key]
        if not selected:
            del self._selected[pod.key]
        holders = self._holders[(pod.ip, policy.key)]
        holders.discard(pod.key)
        if holders:
            return  # another local pod with this IP is still selected by the policy
        del self._holders[(pod.ip, policy.key)]
        for table in (self.ingress, self.egress):
            policies = table.get(pod.ip)
            if policies is not None:
                policies.pop(policy.key, None)
                if not policies:
                    del table[pod.ip]
        if pod.ip not in self.ingress and pod.ip not in self.egress:
            self.tracked.discard(pod.ip)

    # -- namespaces and peers ---------------------------------------------------------------------

    def _namespace_labels(self, name: str) -> Mapping[str, str]:
        labels = self._ns_labels.get(name)
        return labels if labels is not None else {NAMESPACE_NAME_LABEL: name}

    def _recheck_namespace(self, name: str) -> None:
        labels = self._namespace_labels(name)
        pods = list(self._by_ns.get(name, {}).values())
        for peers in self._peers.get(None, {}).values():  # namespace labels matter to these
            for pod in pods:
                if peers.wants(pod, labels):
                    peers.add(pod.key, pod.ip)
                else:
                    peers.discard(pod.key)

    def _peer_sets_for(self, namespace: str) -> list[PeerSet]:
        """The peer sets a pod of ``namespace`` can belong to."""
        return [*self._peers.get(namespace, {}).values(), *self._peers.get(None, {}).values()]

    def _acquire(self, key: PeerKey) -> PeerSet:
        scope = key[0] if key[2] is None else None
        group = self._peers.setdefault(scope, {})
        peers = group.get(key)
        if peers is None:
            peers = group[key] = PeerSet(key)
            if key[2] is None:
                candidates = list(self._by_ns.get(key[0], {}).values())
            else:
                candidates = list(self._pods.values())
            for pod in candidates:
                if peers.wants(pod, self._namespace_labels(pod.namespace)):
                    peers.add(pod.key, pod.ip)
        peers.users += 1
        return peers

    def _release(self, peers: PeerSet) -> None:
        peers.users -= 1
        if peers.users <= 0:
            scope = peers.key[0] if peers.key[2] is None else None
            group = self._peers[scope]
            del group[peers.key]
            if not group:
                del self._peers[scope]

    def _compile(self, np: pb.NetworkPolicy) -> CompiledPolicy:
        ns = np.metadata.namespace
        types = policy_types_of(np)
        policy = CompiledPolicy(f"{ns}/{np.metadata.name}", ns, (), None, None, policy_types=types)
        if np.HasField("pod_selector"):  # required by validation; absent is read as {}
            policy.pod_selector = selector_of(np.pod_selector)
        if "Ingress" in types:
            policy.ingress = tuple(self._rule(policy, r.ports, r.from_peers) for r in np.ingress)
        if "Egress" in types:
            policy.egress = tuple(self._rule(policy, r.ports, r.to_peers) for r in np.egress)
        return policy

    def _rule(
        self,
        policy: CompiledPolicy,
        ports: Sequence[pb.NetworkPolicyPort],
        peers: Sequence[pb.NetworkPolicyPeer],
    ) -> Rule:
        """An empty ``from``/``to`` is every peer and an empty ``ports`` every port (None);
        a peer with no selector and no ipBlock (rejected by validation) matches nothing."""
        compiled: list[PeerSet | IPBlockMatch] = []
        for peer in peers:
            if peer.HasField("ip_block"):
                compiled.append(ip_block_of(peer.ip_block))
                continue
            key = peer_key_of(policy.namespace, peer)
            if key is not None:
                acquired = self._acquire(key)
                policy.peer_sets.append(acquired)
                compiled.append(acquired)
        return Rule(
            tuple(compiled) if peers else None,
            tuple(port_of(p) for p in ports) if ports else None,
        )

    # -- introspection ----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable: every policy and the local pods it isolates (for ``/table``)."""
        policies = [
            {
                "name": p.key,
                "policy_types": list(p.policy_types),
                "ingress_rules": None if p.ingress is None else len(p.ingress),
                "egress_rules": None if p.egress is None else len(p.egress),
                "local_pods": sorted(k for k, s in self._selected.items() if p.key in s),
            }
            for p in sorted(self._policies.values(), key=lambda p: p.key)
        ]
        isolated = []
        for key in sorted(self._selected):
            ip = self._pods[key].ip
            isolated.append({
                "pod": key,
                "ip": str(ipaddress.IPv4Address(ip)),
                "ingress": sorted(self.ingress.get(ip, {})),
                "egress": sorted(self.egress.get(ip, {})),
            })  # fmt: skip
        peer_sets = sum(len(group) for group in self._peers.values())
        return {"policies": policies, "isolated_pods": isolated, "peer_sets": peer_sets}
