"""Typed, validated configuration for every knemu component.

The address plan is written down once, here (DESIGN.md "Address plan"):

* node-N lives on the underlay subnet (default 192.168.59.0/24) and gets podCIDR 10.244.N.0/24
  out of the cluster CIDR 10.244.0.0/16; 10.244.N.1 is the node's own gateway address.
* Services get ClusterIPs from 10.96.0.0/12; ``kubernetes`` is 10.96.0.1 and ``kube-dns``
  10.96.0.10.  NodePorts come from 30000-32767.
* VXLAN runs on UDP 4789 with VNI 1; pods get the underlay's MTU minus 50 bytes of VXLAN (1450
  on a 1500-byte underlay, 1400 on a Docker Swarm overlay) unless it is set explicitly.

Each component has one frozen dataclass.  ``from_mapping`` builds it from a dict (a YAML file,
environment, or flags), rejecting unknown keys and checking values, with units in the names.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from knemu.errors import ConfigError

CLUSTER_DOMAIN = "cluster.local"
CLUSTER_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/12"
KUBERNETES_SERVICE_IP = "10.96.0.1"
DNS_SERVICE_IP = "10.96.0.10"
NODE_PORT_RANGE = (30000, 32767)
VXLAN_PORT = 4789
VNI = 1
POD_MTU_BYTES = 1450  # when the underlay interface cannot be found (1500 minus 50)
KUBELET_PORT = 10250
DEFAULT_AGENT_STATE_DIR = "/run/knemu"
PROXY_MODES = ("iptables", "ipvs", "userspace")
# Pod networks (docs/ARCHITECTURE.md, "Backends"): VXLAN (flannel), IP-in-IP (Calico IPIP),
# BGP with native routing (Calico BGP mode: BIRD on every node).
NETWORK_BACKENDS = ("vxlan", "ipip", "bgp")
# Published by each agent on its Node (label; the api-server mirrors it into flannel's
# backend-type annotation) so peers can refuse a node that speaks another backend.
BACKEND_LABEL = "knemu.dev/network-backend"
IPVS_SCHEDULERS = ("rr", "lc", "sh")


def node_pod_cidr(cluster_cidr: str, index: int, prefix_len: int = 24) -> str:
    """podCIDR of node-N: the N-th /24 of the cluster CIDR (node-1 -> 10.244.1.0/24)."""
    net = ipaddress.ip_network(cluster_cidr)
    subnets = net.subnets(new_prefix=prefix_len)
    for i, sub in enumerate(subnets):
        if i == index:
            return str(sub)
    raise ConfigError(f"cluster CIDR {cluster_cidr} has no /{prefix_len} number {index}")


class _Config:
    """Mixin: build a dataclass from a mapping, rejecting unknown keys."""

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Self:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(
                f"{cls.__name__}: unknown setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(names))}"
            )
        obj = cls(**values)
        obj.validate()  # type: ignore[attr-defined]
        return obj

    def replace(self, **changes: Any) -> Self:
        obj = dataclasses.replace(self, **changes)  # type: ignore[type-var]
        obj.validate()  # type: ignore[attr-defined]
        return obj  # type: ignore[no-any-return]


def _check_cidr(name: str, value: str) -> None:
    try:
        ipaddress.ip_network(value)
    except ValueError as exc:
        raise ConfigError(f"{name}: {value!r} is not a CIDR ({exc})") from None


def _check_hostport(name: str, value: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{name}: {value!r} is not HOST:PORT")


@dataclass(frozen=True)
class Timings(_Config):
    """Node lifecycle timings.  Defaults are fast; ``kubernetes()`` gives upstream defaults."""

    lease_renew_s: float = 1.0
    node_grace_s: float = 4.0  # no lease renewal for this long -> NotReady
    eviction_toleration_s: float = 10.0  # NotReady/Unreachable for this long -> pods evicted

    @classmethod
    def kubernetes(cls) -> Timings:
        # kubelet renews every 10 s; node-monitor-grace-period 40 s; tolerationSeconds 300.
        return cls(lease_renew_s=10.0, node_grace_s=40.0, eviction_toleration_s=300.0)

    def validate(self) -> None:
        if not 0 < self.lease_renew_s < self.node_grace_s:
            raise ConfigError("timings: need 0 < lease_renew_s < node_grace_s")
        if self.eviction_toleration_s < 0:
            raise ConfigError("timings: eviction_toleration_s must be >= 0")


@dataclass(frozen=True)
class ApiServerConfig(_Config):
    data_dir: str = "./knemu-data"
    listen: str = "127.0.0.1:6443"
    grpc_listen: str = "127.0.0.1:6444"
    cluster_cidr: str = CLUSTER_CIDR
    service_cidr: str = SERVICE_CIDR
    node_port_min: int = NODE_PORT_RANGE[0]
    node_port_max: int = NODE_PORT_RANGE[1]
    cluster_domain: str = CLUSTER_DOMAIN
    timings: Timings = field(default_factory=Timings)
    watch_queue_events: int = 10_000  # per watcher; overflow -> RELIST
    event_history: int = 100_000  # events kept for resuming watches

    def validate(self) -> None:
        _check_hostport("listen", self.listen)
        _check_hostport("grpc_listen", self.grpc_listen)
        _check_cidr("cluster_cidr", self.cluster_cidr)
        _check_cidr("service_cidr", self.service_cidr)
        if not 1 <= self.node_port_min <= self.node_port_max <= 65535:
            raise ConfigError("node ports: need 1 <= node_port_min <= node_port_max <= 65535")
        if self.watch_queue_events < 1 or self.event_history < 1:
            raise ConfigError("watch_queue_events and event_history must be positive")
        self.timings.validate()


@dataclass(frozen=True)
class AgentConfig(_Config):
    apiserver: str = "127.0.0.1:6444"  # gRPC address of the api-server
    node_name: str = ""  # empty: the api-server assigns node-N
    identity: str = ""  # stable identity for re-registration (default: hostname)
    underlay_ip: str = ""  # empty: the address of the interface holding the default route
    vxlan_port: int = VXLAN_PORT
    vni: int = VNI
    # Outer UDP source ports, LOW-HIGH (RFC 7348 section 5: a hash of the inner flow in the
    # dynamic range); one port (e.g. "4789") sends every flow from that port.
    vxlan_source_ports: str = "49152-65535"
    vxlan_df: str = "unset"  # outer DF bit: unset (Linux vxlan's default) | set
    pod_mtu_bytes: int = 0  # 0: the underlay's MTU minus 50 (node_agent/dataplane/mtu.py)
    kubelet_listen_port: int = KUBELET_PORT
    proxy_mode: str = "iptables"
    ipvs_scheduler: str = "rr"
    # How pod packets cross the underlay: vxlan | ipip (every node of a cluster the same).
    # With ipip the VXLAN-default pod MTU 1450 becomes 1480 (underlay 1500 - 20), bgp 1500.
    backend: str = "vxlan"
    dns_upstream: str = "127.0.0.1:5353"  # where pod queries to kube-dns are forwarded
    cluster_domain: str = CLUSTER_DOMAIN
    state_dir: str = DEFAULT_AGENT_STATE_DIR
    # Where 10-knemu.conflist goes; empty: /etc/cni/net.d with the default state_dir (the
    # agent owns its machine or container), else <state_dir>/cni/net.d (knemu up, tests).
    cni_conf_dir: str = ""
    host_ports: bool = True  # publish hostPorts (the conflist's portmap plugin)
    netns_prefix: str = "knemu"  # pod namespaces are named <prefix>-<node>-<pod uid prefix>
    # Enforce NetworkPolicy like Calico (the seed's CNI "policy": {"type": "k8s"}); False: a
    # flannel-like node that stores policies but forwards everything.
    network_policy: bool = True
    seed: int = 0  # random choices (iptables mode, faults) are seeded
    # Pods' TUNs with TCP segmentation/receive offload (dataplane/offload.py): off until it
    # measurably pays (README "Benchmarks": no gain yet at equal CPU).
    tun_offload: bool = False

    @property
    def pod_mtu_or_default(self) -> int:
        """pod_mtu_bytes; while it is 0 (the agent has not yet read the underlay's MTU, or a
        part runs without an agent) the 1500-byte underlay's 1450."""
        return self.pod_mtu_bytes or POD_MTU_BYTES

    def validate(self) -> None:
        _check_hostport("apiserver", self.apiserver)
        _check_hostport("dns_upstream", self.dns_upstream)
        if self.proxy_mode not in PROXY_MODES:
            raise ConfigError(
                f"proxy_mode {self.proxy_mode!r} is not one of {', '.join(PROXY_MODES)}"
            )
        if self.ipvs_scheduler not in IPVS_SCHEDULERS:
            raise ConfigError(
                f"ipvs_scheduler {self.ipvs_scheduler!r} is not one of {', '.join(IPVS_SCHEDULERS)}"
            )
        if self.pod_mtu_bytes and not 576 <= self.pod_mtu_bytes <= 9000:
            raise ConfigError(
                "pod_mtu_bytes must be between 576 and 9000 (or 0: the underlay's MTU less the "
                "backend's overhead)"
            )
        if self.backend not in NETWORK_BACKENDS:
            raise ConfigError(
                f"backend {self.backend!r} is not one of {', '.join(NETWORK_BACKENDS)}"
            )
        if not 0 < self.vni < 1 << 24:
            raise ConfigError("vni must fit in 24 bits and not be 0")
        self.vxlan_source_port_range  # noqa: B018 -- raises ConfigError naming the value
        if self.vxlan_df not in ("unset", "set"):
            raise ConfigError(f"vxlan_df {self.vxlan_df!r} is not one of unset, set")

    @property
    def vxlan_source_port_range(self) -> tuple[int, int]:
        """``vxlan_source_ports`` as (low, high); ConfigError names a malformed value."""
        low, _, high = self.vxlan_source_ports.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            first = last = 0
        if not 1 <= first <= last <= 65535:
            raise ConfigError(
                f"vxlan_source_ports {self.vxlan_source_ports!r} is not a port range: write "
                "LOW-HIGH within 1-65535 (default 49152-65535) or one port"
            )
        return first, last


@dataclass(frozen=True)
class DnsConfig(_Config):
    apiserver: str = "127.0.0.1:6444"
    listen: str = "127.0.0.1:5353"  # UDP and TCP
    metrics_listen: str = "127.0.0.1:9153"  # CoreDNS's metrics port
    zone: str = CLUSTER_DOMAIN
    ttl_s: int = 5  # CoreDNS kubernetes plugin default (ttl 5)
    upstream: str = ""  # HOST:PORT for names outside the zone; empty -> REFUSED
    pods_mode: str = "insecure"  # CoreDNS `pods insecure|verified|disabled`

    def validate(self) -> None:
        _check_hostport("apiserver", self.apiserver)
        _check_hostport("listen", self.listen)
        if self.upstream:
            _check_hostport("upstream", self.upstream)
        if self.pods_mode not in ("insecure", "verified", "disabled"):
            raise ConfigError("pods_mode must be insecure, verified or disabled")
        if not 0 <= self.ttl_s <= 3600:
            raise ConfigError("ttl_s must be between 0 and 3600")
