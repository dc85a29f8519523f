"""The plan of a local cluster (``knemu up``): names, addresses, commands, configs; no I/O.

node-N numbering and addresses follow DESIGN.md "Address plan": the underlay subnet's .1 is
the host side of the switch, node-N is .(10+N) (as the seed's 192.168.1.11-13), and every
namespace the cluster makes, pods' included, starts with ``knemu-<name>-``.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

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
REST_PORT, GRPC_PORT, DNS_PORT, DNS_METRICS_PORT = 6443, 6444, 5353, 9153


class Cluster:
    """Names and addresses of one local cluster, derived from its name and subnet (pure)."""

    def __init__(
        self,
        name: str,
        subnet: str,
        nodes: int,
        state_root: str = STATE_ROOT,
        mtu_bytes: int = ETHERNET_MTU_BYTES,
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
        self.name, self.net, self.nodes, self.mtu_bytes = name, net, nodes, mtu_bytes
        self.state_dir = Path(state_root) / f"cluster-{name}"
        self.prefix = f"knemu-{name}-"  # every namespace of the cluster, pods' included
        self.switch_ns = f"knemu-{name}-sw"
        self.host_link = f"knh-{name}"
        self.host_ip = str(net.network_address + 1)

    def node_ns(self, n: int) -> str:
        return f"knemu-{self.name}-node-{n}"

    def node_ip(self, n: int) -> str:
        return str(self.net.network_address + NODE_IP_OFFSET + n)

    @property
    def server_url(self) -> str:
        return f"http://{self.host_ip}:{REST_PORT}"

    @property
    def grpc_target(self) -> str:
        return f"{self.host_ip}:{GRPC_PORT}"

    def network_commands(self) -> list[list[str]]:
        """The `ip` commands building the switch, the host port and every node namespace."""
        sw, plen, host = self.switch_ns, self.net.prefixlen, self.host_link
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
        for n in range(1, self.nodes + 1):
            ns = self.node_ns(n)
            lines += [
                f"netns add {ns}",
                f"-n {sw} link add n{n} type veth peer name eth0 netns {ns}",
                f"-n {sw} link set n{n} master br0 up",
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
        if jumbo:
            lines.append(f"-n {sw} link set br0 mtu {self.mtu_bytes}")
        return [["ip", *line.split()] for line in lines]

    def component_configs(
        self, proxy_mode: str, backend: str = "vxlan", tun_offload: bool = False
    ) -> dict[str, dict[str, Any]]:
        """Config mapping of every process: "apiserver", "dns", "node-N"."""
        configs: dict[str, dict[str, Any]] = {
            "apiserver": {
                "data_dir": str(self.state_dir / "apiserver-data"),
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
                "backend": backend,
                "seed": n,
            }
            if tun_offload:
                configs[f"node-{n}"]["tun_offload"] = True
        return configs

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
        lines += [f"  logs        {self.state_dir}/",
                  f"  node shell  ip netns exec {self.node_ns(1)} bash",
                  f"export KNEMU_SERVER={self.server_url}"]  # fmt: skip
        return "\n".join(lines)
