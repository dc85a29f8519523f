"""NetworkPolicy objects -> compiled rules (sans-I/O): selectors, peers, ip blocks, ports.

The shapes follow networking.k8s.io/v1 as
https://kubernetes.io/docs/concepts/services-networking/network-policies/ describes them:

* a LabelSelector is matchLabels (each ``key = value``) ANDed with matchExpressions (In, NotIn,
  Exists, DoesNotExist; NotIn and DoesNotExist also match pods without the key); ``{}`` matches
  everything;
* a peer selects pods by podSelector (in the policy's namespace), by namespaceSelector (every
  pod of the matching namespaces) or both at once (ANDed), or addresses by ipBlock (a CIDR
  minus its ``except`` CIDRs);
* a port is a protocol (default TCP), a number, a range (``endPort``) or the name of a
  container port of the *destination* pod, which is resolved per pod when a connection opens;
  no port at all means every port of that protocol;
* ``policyTypes`` defaults to Ingress, plus Egress when the policy has egress rules.

Things the API server rejects (validation/netpol.py) but that an old stored object may still
carry compile to matchers that match nothing, so a policy never allows more than it says.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from knemu.proto import knemu_pb2 as pb

PROTOCOLS = {"TCP": 6, "UDP": 17, "SCTP": 132}
NO_PROTOCOL = -1  # an unknown protocol: the port entry matches nothing
# The API server labels every namespace with its own name (Kubernetes >= 1.21), which is what
# the usual "allow from namespace X" policies select on.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

Requirement = tuple[str, str, tuple[str, ...]]  # (key, operator, values)
Selector = tuple[Requirement, ...]  # () matches everything
NEVER: Selector = (("", "Never", ()),)  # an operator we do not know: matches nothing
PeerKey = tuple[str, Selector | None, Selector | None]  # (namespace, pods, namespaces)


def selector_of(sel: pb.LabelSelector) -> Selector:
    """A hashable, canonical form of a LabelSelector (equal selectors share peer sets)."""
    reqs: set[Requirement] = {(k, "In", (v,)) for k, v in sel.match_labels.items()}
    for expr in sel.match_expressions:
        op = expr.operator
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return NEVER
        reqs.add((expr.key, op, tuple(sorted(set(expr.values)))))
    return tuple(sorted(reqs))


def matches(selector: Selector, labels: Mapping[str, str]) -> bool:
    for key, op, values in selector:
        value = labels.get(key)
        if op == "In":
            if value not in values:
                return False
        elif op == "NotIn":
            if value is not None and value in values:
                return False
        elif op == "Exists":
            if value is None:
                return False
        elif op == "DoesNotExist":
            if value is not None:
                return False
        else:
            return False
    return True


# ---- pods ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodInfo:
    """What policy needs of a pod: who it is, where, its address and named ports."""

    key: str  # "namespace/name"
    namespace: str
    labels: Mapping[str, str]
    ip: bytes  # 4 packed bytes (b"" while it has none)
    node: str
    ports: Mapping[tuple[int, str], int] = field(default_factory=dict)  # (proto, name) -> port


def pod_info(pod: pb.Pod) -> PodInfo | None:
    """None for pods policy does not apply to: host-network pods (the node's own address) and
    finished pods (their IP may already belong to another pod)."""
    if pod.host_network or pod.phase in ("Succeeded", "Failed"):
        return None
    try:
        ip = ipaddress.IPv4Address(pod.pod_ip).packed if pod.pod_ip else b""
    except ValueError:
        ip = b""
    ports = {
        (PROTOCOLS.get(p.protocol or "TCP", NO_PROTOCOL), p.name): p.container_port
        for c in pod.containers
        for p in c.ports
        if p.name and p.container_port
    }
    meta = pod.metadata
    return PodInfo(
        f"{meta.namespace}/{meta.name}", meta.namespace, dict(meta.labels), ip, pod.node_name, ports
    )


# ---- peers, ports, rules ---------------------------------------------------------------------


class PeerSet:
    """The pods one (namespace, podSelector, namespaceSelector) peer selects, kept current by
    the engine as pods and namespaces change; policies sharing a peer share the set."""

    __slots__ = ("ips", "key", "members", "users")

    def __init__(self, key: PeerKey) -> None:
        self.key = key
        self.members: dict[str, bytes] = {}  # pod key -> IP
        self.ips: dict[bytes, int] = {}  # IP -> member count (two pods may briefly share one)
        self.users = 0

    def covers(self, namespace: str, ns_labels: Mapping[str, str]) -> bool:
        ns, _, ns_selector = self.key
        return namespace == ns if ns_selector is None else matches(ns_selector, ns_labels)

    def wants(self, pod: PodInfo, ns_labels: Mapping[str, str]) -> bool:
        pods = self.key[1]
        return self.covers(pod.namespace, ns_labels) and (pods is None or matches(pods, pod.labels))

    def add(self, key: str, ip: bytes) -> None:
        if self.members.get(key) == ip:
            return
        self.discard(key)
        self.members[key] = ip
        self.ips[ip] = self.ips.get(ip, 0) + 1

    def discard(self, key: str) -> None:
        ip = self.members.pop(key, None)
        if ip is not None:
            left = self.ips[ip] - 1
            if left:
                self.ips[ip] = left
            else:
                del self.ips[ip]


@dataclass(frozen=True)
class IPBlockMatch:
    """ipBlock: ``net/mask`` minus the ``except`` ranges (IPv4; an IPv6 block matches nothing
    here, the data plane being IPv4)."""

    cidr: str
    net: int
    mask: int
    excepts: tuple[tuple[int, int], ...] = ()

    def contains(self, addr: int) -> bool:
        if addr & self.mask != self.net:
            return False
        return not any(addr & m == n for n, m in self.excepts)


def _v4(text: str) -> tuple[int, int] | None:
    try:
        net = ipaddress.ip_network(text, strict=False)  # ParseCIDRSloppy: host bits allowed
    except ValueError:
        return None
    if not isinstance(net, ipaddress.IPv4Network):
        return None
    return int(net.network_address), int(net.netmask)


def ip_block_of(block: pb.IPBlock) -> IPBlockMatch:
    outer = _v4(block.cidr)
    if outer is None:
        return IPBlockMatch(block.cidr, 1, 0)  # net & 0 == 1 never holds
    excepts = tuple(e for e in map(_v4, block.except_cidrs) if e is not None)
    return IPBlockMatch(block.cidr, outer[0], outer[1], excepts)


@dataclass(frozen=True)
class PortMatch:
    """One NetworkPolicyPort: ``proto`` and a range ``lo..hi``, or a container port ``name``."""

    proto: int
    lo: int = 0
    hi: int = 65535
    name: str = ""


def port_of(port: pb.NetworkPolicyPort) -> PortMatch:
    proto = PROTOCOLS.get(port.protocol or "TCP", NO_PROTOCOL)
    text = port.port
    if not text:
        return PortMatch(proto)  # every port of the protocol
    if text.isdigit():
        lo = int(text)
        hi = port.end_port or lo
        return PortMatch(proto, lo, hi) if 1 <= lo <= hi <= 65535 else PortMatch(NO_PROTOCOL)
    return PortMatch(proto, 0, -1, text)


Peer = PeerSet | IPBlockMatch


@dataclass(frozen=True)
class Rule:
    """One ingress/egress rule: ``peers`` None = every peer, ``ports`` None = every port."""

    peers: tuple[Peer, ...] | None
    ports: tuple[PortMatch, ...] | None


@dataclass
class CompiledPolicy:
    key: str  # "namespace/name"
    namespace: str
    pod_selector: Selector
    ingress: tuple[Rule, ...] | None  # None: the policy does not isolate for ingress
    egress: tuple[Rule, ...] | None
    peer_sets: list[PeerSet] = field(default_factory=list)  # to release when it goes
    policy_types: tuple[str, ...] = ()


def policy_types_of(np: pb.NetworkPolicy) -> tuple[str, ...]:
    """spec.policyTypes, defaulted as the API server does when it is empty."""
    if np.policy_types:
        return tuple(np.policy_types)
    return ("Ingress", "Egress") if np.egress else ("Ingress",)


def peer_key_of(namespace: str, peer: pb.NetworkPolicyPeer) -> PeerKey | None:
    """(namespace, pod selector or None = every pod, namespace selector or None = the
    policy's own namespace); None for a peer with no selector at all (matches nothing)."""
    has_pods, has_ns = peer.HasField("pod_selector"), peer.HasField("namespace_selector")
    if not (has_pods or has_ns):
        return None
    pods = selector_of(peer.pod_selector) if has_pods else None
    namespaces = selector_of(peer.namespace_selector) if has_ns else None
    return namespace, pods, namespaces
