"""The plan of a local cluster (``knemu up``): names, addresses, commands, configs; no I/O.

node-N numbering and addresses follow DESIGN.md "Address plan": the underlay subnet's .1 is
the host side of the switch, node-N is .(10+N) (as the seed's 192.168.1.11-13), the external
client is .2, and every namespace the cluster makes, pods' included, starts with
``knemu-<name>-``.

The external client (``knemu-<name>-external``, ``knemu external -- CMD``) is a namespace on
the switch outside every node: a client on the internet as the cluster sees it, with an
address in the node subnet and no route anywhere else, from which NodePorts are reached as
seed 002 describes (``curl http://<node IP>:<nodePort>/``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from knemu.apiserver.controllers.service import LOAD_BALANCER_POOL
from knemu.errors import ConfigError

NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")  # keeps knh-<name> within IFNAMSIZ (15)
DEFAULT_NAME = "knemu"
DEFAULT_SUBNET = "192.168.59.0/24"
ETHERNET_MTU_BYTES = 1500
# The node network's MTU (`knemu up --mtu`): at least the IPv4 minimum plus VXLAN's 50 bytes,
# at most the 9216 of common jumbo-frame switches; agents read it and give pods 50 less.
MIN_UNDERLAY_MTU_BYTES, MAX_UNDERLAY_MTU_BYTES = 626, 9216
STATE_ROOT = "/run/knemu"
NODE_IP_OFFSET = 10  # node-N gets .(10+N), as the seed's 192.168.1.11-13
EXTERNAL_IP_OFFSET = 2  # the external client; .1 is the host side of the switch
TOR_AS = 64513  # the top-of-rack router's AS (eBGP to the nodes' 64512, as Calico's AS-per-rack)
REST_PORT, GRPC_PORT, DNS_PORT, DNS_METRICS_PORT = 6443, 6444, 5353, 9153


@dataclass(frozen=True)
class PodNetwork:
    """How the nodes carry pod traffic (the agents' settings of the same names)."""

    backend: str = "vxlan"
    encryption: str = "none"
    bgp_route_reflectors: str = ""
    bgp_peers: str = ""
    bgp_bfd_ms: int = 0


class Cluster:
    """Names and addresses of one local cluster, derived from its name and subnet (pure)."""

    def __init__(
        self,
        name: str,
        subnet: str,
        nodes: int,
        state_root: str = STATE_ROOT,
        mtu_bytes: int = ETHERNET_MTU_BYTES,
        racks: int = 1,
    ):
        if not NAME_RE.match(name):
            raise ConfigError(
                f"cluster name {name!r}: use 1-8 lowercase letters/digits starting with a letter"
            )
        try:
            net = IPv4Network(subnet)
        except ValueError as exc:
            raise ConfigError(f"--subnet {subnet!r} is not an IPv4 CIDR ({exc})") from None
        if not 0 <= nodes <= net.num_addresses - NODE_IP_OFFSET - 2:
            raise ConfigError(
                f"--nodes {nodes}: {subnet} has room for 1 to "
                f"{net.num_addresses - NODE_IP_OFFSET - 2} nodes"
            )
        if not MIN_UNDERLAY_MTU_BYTES <= mtu_bytes <= MAX_UNDERLAY_MTU_BYTES:
            raise ConfigError(
                f"--mtu {mtu_bytes}: the node network's MTU must be {MIN_UNDERLAY_MTU_BYTES}-"
                f"{MAX_UNDERLAY_MTU_BYTES} (1500: Ethernet; 9000 or 9001: jumbo frames)"
            )
        if racks not in (1, 2) or (racks == 2 and net.prefixlen > 24):
            raise ConfigError(f"--racks {racks}: 1, or 2 (the subnet, /24 or larger, is halved)")
        # Two racks (seed 001's caveat): the subnet's halves, nodes 1..ceil(N/2) in the first,
        # the rest in the second, a top-of-rack router namespace routing between them.
        self.rack_nets = list(net.subnets(prefixlen_diff=1)) if racks == 2 else [net]
        self.name, self.net, self.nodes, self.mtu_bytes = name, net, nodes, mtu_bytes
        self.state_dir = Path(state_root) / f"cluster-{name}"
        self.prefix = f"knemu-{name}-"  # every namespace of the cluster, pods' included
        self.switch_ns = f"knemu-{name}-sw"
        self.host_link = f"knh-{name}"
        self.host_ip = str(net.network_address + 1)
        self.external_ns = f"knemu-{name}-external"
        self.external_ip = str(net.network_address + EXTERNAL_IP_OFFSET)

    def node_ns(self, n: int) -> str:
        return f"knemu-{self.name}-node-{n}"

    def rack_of(self, n: int) -> int:
        return 0 if len(self.rack_nets) == 1 or n <= (self.nodes + 1) // 2 else 1

    def node_ip(self, n: int) -> str:
        return str(self.rack_nets[self.rack_of(n)].network_address + NODE_IP_OFFSET + n)

    @property
    def tor_ns(self) -> str:
        return f"knemu-{self.name}-tor"

    def tor_ip(self, rack: int) -> str:
        """The top-of-rack router's address in ``rack``: the rack subnet's last host."""
        return str(self.rack_nets[rack].broadcast_address - 1)

    @property
    def server_url(self) -> str:
        return f"https://{self.host_ip}:{REST_PORT}"

    @property
    def apiserver_data(self) -> Path:
        """The api-server's data directory (its database, PKI and admin.conf)."""
        return self.state_dir / "apiserver-data"

    @property
    def grpc_target(self) -> str:
        return f"{self.host_ip}:{GRPC_PORT}"

    def network_commands(self) -> list[list[str]]:
        """The `ip` commands building the switch, the host port and every node namespace."""
        sw, plen, host = self.switch_ns, self.rack_nets[0].prefixlen, self.host_link
        lines = [
            f"netns add {sw}",
            f"-n {sw} link set lo up",
            f"-n {sw} link add br0 type bridge",
            f"-n {sw} link set br0 up",
            f"link add {host} type veth peer name h0 netns {sw}",
            f"-n {sw} link set h0 master br0 up",
            f"addr add {self.host_ip}/{plen} dev {host}",
            f"link set {host} up",
        ]
        jumbo = self.mtu_bytes != ETHERNET_MTU_BYTES
        if jumbo:  # a bridge's MTU follows its ports': set every one, the bridge last
            lines += [f"link set {host} mtu {self.mtu_bytes}",
                      f"-n {sw} link set h0 mtu {self.mtu_bytes}"]  # fmt: skip
        if len(self.rack_nets) == 2:  # the second rack's switch
            lines += [f"-n {sw} link add br1 type bridge", f"-n {sw} link set br1 up"]
        for n in range(1, self.nodes + 1):
            ns = self.node_ns(n)
            lines += [
                f"netns add {ns}",
                f"-n {sw} link add n{n} type veth peer name eth0 netns {ns}",
                f"-n {sw} link set n{n} master br{self.rack_of(n)} up",
                f"-n {ns} link set lo up",
                f"-n {ns} addr add {self.node_ip(n)}/{plen} dev eth0",
                f"-n {ns} link set eth0 up",
                *(
                    [
                        f"-n {sw} link set n{n} mtu {self.mtu_bytes}",
                        f"-n {ns} link set eth0 mtu {self.mtu_bytes}",
                    ]
                    if jumbo
                    else []
                ),
                # A node forwards between its pods and the underlay (a pod reaching another
                # node's IP, NodePorts): set, not inherited from whatever the host has.
                f"netns exec {ns} sysctl -qw net.ipv4.ip_forward=1",
            ]
            if len(self.rack_nets) == 2:  # the other rack is behind the top-of-rack router
                rack = self.rack_of(n)
                lines.append(
                    f"-n {ns} route add {self.rack_nets[1 - rack]} via {self.tor_ip(rack)}"
                )
        if len(self.rack_nets) == 2:
            lines += self._tor_commands()
        # The external client keeps Ethernet's 1500, as a client on the internet does.
        lines += self._external_lines()
        if jumbo:
            lines.append(f"-n {sw} link set br0 mtu {self.mtu_bytes}")
        return [["ip", *line.split()] for line in lines]

    def _external_lines(self) -> list[str]:
        """The external client: a veth on the (first rack's) switch, one address, no default
        route."""
        sw, ns = self.switch_ns, self.external_ns
        return [
            f"netns add {ns}",
            f"-n {sw} link add x0 type veth peer name eth0 netns {ns}",
            f"-n {sw} link set x0 master br0 up",
            f"-n {ns} link set lo up",
            f"-n {ns} addr add {self.external_ip}/{self.rack_nets[0].prefixlen} dev eth0",
            f"-n {ns} link set eth0 up",
            # LoadBalancer addresses are on-link, as MetalLB L2 pools are: the client ARPs for
            # them and the announcing node answers (kubeproxy.l2announce).
            f"-n {ns} route add {LOAD_BALANCER_POOL} dev eth0",
        ]

    def _tor_commands(self) -> list[str]:
        """The second rack's bridge and the router between the racks (forwarding; BIRD on it
        is started separately), and the host's route to the second rack through it."""
        sw, tor = self.switch_ns, self.tor_ns
        lines = [f"netns add {tor}", f"-n {tor} link set lo up"]
        for rack in (0, 1):
            lines += [
                f"-n {sw} link add t{rack} type veth peer name eth{rack} netns {tor}",
                f"-n {sw} link set t{rack} master br{rack} up",
                f"-n {tor} addr add {self.tor_ip(rack)}/{self.rack_nets[rack].prefixlen} "
                f"dev eth{rack}",
                f"-n {tor} link set eth{rack} up",
            ]
        host_route = f"route add {self.rack_nets[1]} via {self.tor_ip(0)} dev {self.host_link}"
        lines += [f"netns exec {tor} sysctl -qw net.ipv4.ip_forward=1", host_route]
        return lines

    def component_configs(
        self, proxy_mode: str, network: PodNetwork | None = None, registries: str = ""
    ) -> dict[str, dict[str, Any]]:
        """Config mapping of every process: "apiserver", "dns", "node-N"."""
        net = network or PodNetwork()
        configs: dict[str, dict[str, Any]] = {
            "apiserver": {
                "data_dir": str(self.apiserver_data),
                "listen": f"{self.host_ip}:{REST_PORT}",
                "grpc_listen": self.grpc_target,
            },
            "dns": {
                "apiserver": self.grpc_target,
                "listen": f"{self.host_ip}:{DNS_PORT}",
                "metrics_listen": f"{self.host_ip}:{DNS_METRICS_PORT}",
            },
        }
        for n in range(1, self.nodes + 1):
            configs[f"node-{n}"] = {
                "apiserver": self.grpc_target,
                "node_name": f"node-{n}",
                "identity": f"{self.name}/node-{n}",
                "underlay_ip": self.node_ip(n),
                "dns_upstream": f"{self.host_ip}:{DNS_PORT}",
                "state_dir": str(self.state_dir / f"node-{n}"),
                "netns_prefix": f"knemu-{self.name}",
                "proxy_mode": proxy_mode,
                "backend": net.backend,
                "encryption": net.encryption,
                "bgp_route_reflectors": net.bgp_route_reflectors,
                "bgp_peers": ",".join(
                    p for p in (net.bgp_peers, self._tor_peer(n, net.backend)) if p
                ),
                "bgp_bfd_ms": net.bgp_bfd_ms,
                "registries": registries,
                "seed": n,
            }
        return configs

    def _tor_peer(self, n: int, backend: str) -> str:
        """With two racks and BGP, each node peers with its rack's top-of-rack router."""
        if len(self.rack_nets) == 1 or backend != "bgp":
            return ""
        return f"{self.tor_ip(self.rack_of(n))}:{TOR_AS}"

    def overlapping_route(self, routes: str) -> str:
        """The first line of ``ip -4 route`` output whose prefix overlaps the subnet, or ""."""
        for line in routes.splitlines():
            words = line.split()
            if not words or words[0] == "default":
                continue
            try:
                if IPv4Network(words[0], strict=False).overlaps(self.net):
                    return line.strip()
            except ValueError:
                continue
        return ""

    def summary(self) -> str:
        """What `knemu up` prints once every node is Ready."""
        lines = [
            f"cluster {self.name} is up: {self.nodes} node(s) Ready",
            f"  api-server  {self.server_url}  (gRPC {self.grpc_target})",
            f"  console     {self.server_url}/console/",
            f"  dns         {self.host_ip}:{DNS_PORT}",
        ]
        lines += [f"  node-{n:<6} {self.node_ip(n):<15} netns {self.node_ns(n)}"
                  for n in range(1, self.nodes + 1)]  # fmt: skip
        if len(self.rack_nets) == 2:
            lines.append(f"  racks       {self.rack_nets[0]} and {self.rack_nets[1]}, routed by "
                         f"{self.tor_ip(0)}/{self.tor_ip(1)} (netns {self.tor_ns})")  # fmt: skip
        lines += [f"  logs        {self.state_dir}/",
                  f"  external    {self.external_ip:<15} knemu external --name {self.name} "
                  "-- curl http://NODE_IP:NODE_PORT/",
                  f"  node shell  ip netns exec {self.node_ns(1)} bash",
                  f"export KNEMU_SERVER={self.server_url}"]  # fmt: skip
        return "\n".join(lines)
