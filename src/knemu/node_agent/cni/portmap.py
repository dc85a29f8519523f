"""hostPort: which pod holds which port of the node (the CNI ``portmap`` plugin's table).

A container port with ``hostPort`` (and optionally ``hostIP``) is published on the node:
``hostIP:hostPort`` leads to ``podIP:containerPort`` of that pod, on that node only; "each
<hostIP, hostPort, protocol> combination must be unique"
(https://kubernetes.io/docs/concepts/configuration/overview/#services).  A CNI network plugin
supports it by chaining the portmap plugin
(https://kubernetes.io/docs/concepts/extend-kubernetes/compute-storage-net/network-plugins/,
https://www.cni.dev/plugins/current/meta/portmap/), which gets the ports as its
``portMappings`` runtime config and installs DNAT rules.

Theory of operation.  A host port is (protocol, hostIP, hostPort); an empty hostIP means every
address of the node (0.0.0.0).  Two host ports clash when protocol and port are equal and
either address is 0.0.0.0 or both are the same address: the rule of kube-scheduler's NodePorts
filter (framework.HostPortInfo.CheckConflict), which the kubelet runs again when it admits a
pod.  ``PortMapTable.admit`` is that admission: a pod whose host ports clash with another
admitted pod's is refused (the agent then rejects it, phase Failed, reason NodePorts, as the
kubelet does), otherwise its ports are reserved at once, before the sandbox exists, so two pods
started in parallel cannot both get one port.  Once the pod has an address (``set_pod_ip``)
its ports become relays (``relays``) that the agent's ``PortProxy`` listens on; ``release``
frees them when the pod stops.  0.0.0.0 is published on the node's own IP, where NodePorts
live too.  Sans-I/O: no sockets, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from knemu.node_agent.kubeproxy.relays import RELAYED_PROTOCOLS, Relay
from knemu.proto import knemu_pb2 as pb

ALL_ADDRESSES = "0.0.0.0"  # hostIP "" (the default) means every address of the node
NODE_PORTS_REASON = "NodePorts"  # the kubelet's admission reason: the scheduler plugin's name
# kube-scheduler's nodeports.ErrReason, shared by the scheduler event and the kubelet rejection.
NO_FREE_PORTS = "node(s) didn't have free ports for the requested pod ports"


@dataclass(frozen=True, order=True)
class HostPort:
    protocol: str  # TCP | UDP | SCTP
    host_ip: str  # ALL_ADDRESSES or one address
    host_port: int

    def clashes(self, other: HostPort) -> bool:
        """framework.HostPortInfo.CheckConflict: 0.0.0.0 overlaps every address."""
        if (self.protocol, self.host_port) != (other.protocol, other.host_port):
            return False
        return ALL_ADDRESSES in (self.host_ip, other.host_ip) or self.host_ip == other.host_ip

    def __str__(self) -> str:
        where = "" if self.host_ip == ALL_ADDRESSES else f"{self.host_ip}:"
        return f"{where}{self.host_port}/{self.protocol}"


@dataclass(frozen=True, order=True)
class PortMapping:
    """One entry of portmap's ``portMappings``: a host port and the container port behind it."""

    host: HostPort
    container_port: int


def requested(pod: pb.Pod) -> tuple[PortMapping, ...]:
    """The pod's host ports, with the API defaults applied (protocol TCP, hostIP 0.0.0.0).
    A port without hostPort is not published: it is reached at the pod IP only."""
    found: dict[PortMapping, None] = {}
    for container in pod.containers:
        for port in container.ports:
            if port.host_port:
                host = HostPort(port.protocol or "TCP", port.host_ip or ALL_ADDRESSES,
                                port.host_port)  # fmt: skip
                found[PortMapping(host, port.container_port or port.host_port)] = None
    return tuple(found)


@dataclass(frozen=True)
class Clash:
    wanted: HostPort
    holder: str  # "namespace/name" of the pod that holds it
    held: HostPort

    @property
    def message(self) -> str:
        """The kubelet's rejection message (PredicateFailureError), plus who holds the port."""
        return (
            f"Predicate {NODE_PORTS_REASON} failed: {NO_FREE_PORTS}: hostPort {self.wanted} "
            f"is held by pod {self.holder} ({self.held}); delete that pod, choose another "
            "hostPort, or let the scheduler pick the node (no spec.nodeName)"
        )


@dataclass
class _Entry:
    mappings: tuple[PortMapping, ...]
    pod_ip: str = ""  # empty until the pod's sandbox has an address


class PortMapTable:
    """Host ports held by the pods admitted on this node (sans-I/O)."""

    def __init__(self) -> None:
        self._pods: dict[str, _Entry] = {}

    def admit(self, key: str, mappings: Iterable[PortMapping]) -> Clash | None:
        """Reserve ``key``'s host ports, or say which other pod holds one of them.  Admitting
        a pod again replaces its ports (its own earlier reservation never clashes)."""
        wanted = tuple(mappings)
        for other, entry in self._pods.items():
            if other == key:
                continue
            for mine in wanted:
                for theirs in entry.mappings:
                    if mine.host.clashes(theirs.host):
                        return Clash(mine.host, other, theirs.host)
        if wanted:
            self._pods[key] = _Entry(wanted, self._pods.get(key, _Entry(())).pod_ip)
        else:
            self._pods.pop(key, None)
        return None

    def holds(self, key: str) -> bool:
        return key in self._pods

    def set_pod_ip(self, key: str, pod_ip: str) -> bool:
        """The pod's sandbox has an address: its ports can be relayed.  False: nothing held."""
        entry = self._pods.get(key)
        if entry is None:
            return False
        entry.pod_ip = pod_ip
        return True

    def release(self, key: str) -> bool:
        """Free ``key``'s ports (the pod stopped or was rejected); False if it held none."""
        return self._pods.pop(key, None) is not None

    def holder(self, relay: Relay) -> str | None:
        """The pod whose port ``relay`` publishes, for events about it."""
        for key, entry in self._pods.items():
            if entry.pod_ip == relay.target_ip and any(
                m.host.protocol == relay.protocol and m.host.host_port == relay.listen_port
                for m in entry.mappings
            ):
                return key
        return None

    def relays(self, node_ip: str) -> list[Relay]:
        """What to listen on: every admitted pod with an address, 0.0.0.0 as ``node_ip``.
        SCTP ports stay reserved (the scheduler counts them too) but are not relayed."""
        out = []
        for entry in self._pods.values():
            if not entry.pod_ip:
                continue
            for m in entry.mappings:
                if m.host.protocol not in RELAYED_PROTOCOLS:
                    continue
                listen = node_ip if m.host.host_ip == ALL_ADDRESSES else m.host.host_ip
                out.append(Relay(m.host.protocol, listen, m.host.host_port, entry.pod_ip,
                                 m.container_port))  # fmt: skip
        return sorted(out)

    def snapshot(self) -> list[dict[str, object]]:
        """For ``GET /table``: one row per published port."""
        return [
            {"pod": key, "protocol": m.host.protocol, "host_ip": m.host.host_ip,
             "host_port": m.host.host_port, "pod_ip": entry.pod_ip,
             "container_port": m.container_port}
            for key, entry in sorted(self._pods.items())
            for m in entry.mappings
        ]  # fmt: skip
