"""The node's host interface: TUN ``knemu0`` holding the node's gateway address 10.244.N.1.

Processes in the node's own namespace (the NodePort proxy, the DNS forwarder, a person with a
shell) reach pods and ClusterIPs through the same userspace router as pods do: the kernel routes
the cluster CIDR (10.244.0.0/16) and the service CIDR (10.96.0.0/12) into this TUN, the agent
reads the packets (``Router.handle_host``) and writes back whatever the router delivers to the
host.  This plays the part of the ``cni0``/``flannel.1`` pair plus kube-proxy's iptables chains
of a real node (DESIGN.md "Node host interface").

Reverse-path filtering is turned off on the device: replies arrive with pod or ClusterIP
sources that the kernel would otherwise judge "martian" under strict rp_filter (RFC 3704
section 2.2 describes strict mode; Linux ip-sysctl.rst ``rp_filter``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass

from knemu.config import CLUSTER_CIDR, POD_MTU_BYTES, SERVICE_CIDR
from knemu.errors import ConfigError
from knemu.node_agent.dataplane.tun import close_tun, open_tun

log = logging.getLogger(__name__)

HOST_IFNAME = "knemu0"


@dataclass(frozen=True)
class HostPlan:
    """What the host interface looks like; derived from the node's podCIDR."""

    ifname: str
    address: str  # the gateway, first host of the podCIDR (10.244.N.1)
    prefix_len: int
    mtu_bytes: int
    routes: tuple[str, ...]  # extra prefixes routed into the TUN


def host_plan(
    pod_cidr: str,
    cluster_cidr: str = CLUSTER_CIDR,
    service_cidr: str = SERVICE_CIDR,
    mtu_bytes: int = POD_MTU_BYTES,
    ifname: str = HOST_IFNAME,
) -> HostPlan:
    try:
        net = ipaddress.ip_network(pod_cidr)
    except ValueError as exc:
        raise ConfigError(f"podCIDR {pod_cidr!r} is not a CIDR ({exc})") from None
    if net.num_addresses < 4:
        raise ConfigError(
            f"podCIDR {pod_cidr} is too small for a gateway and pods; use a /30 or larger"
        )
    gateway = str(next(net.hosts()))
    return HostPlan(
        ifname=ifname,
        address=gateway,
        prefix_len=net.prefixlen,
        mtu_bytes=mtu_bytes,
        routes=(cluster_cidr, service_cidr),
    )


class HostInterface:
    """Owns the host TUN fd; ``close`` deletes the device (it is not persistent)."""

    def __init__(self, plan: HostPlan, fd: int) -> None:
        self.plan = plan
        self.fd = fd

    @classmethod
    async def create(cls, plan: HostPlan) -> HostInterface:
        """Create, address and route the TUN in the caller's namespace (needs CAP_NET_ADMIN)."""
        fd = open_tun(plan.ifname)
        # Before the link goes up: no IPv6 link-local chatter (the router is IPv4 only), and
        # no reverse-path filter (replies come from pod and ClusterIP sources).  The effective
        # rp_filter is max(all, device), so "all" is cleared too (this namespace only).
        _set_sysctl(f"net/ipv6/conf/{plan.ifname}/disable_ipv6", "1")
        _set_sysctl(f"net/ipv4/conf/{plan.ifname}/rp_filter", "0")
        _set_sysctl("net/ipv4/conf/all/rp_filter", "0")
        try:
            for cmd in configure_commands(plan):
                await _ip(cmd)
        except BaseException:
            close_tun(fd)
            raise
        return cls(plan, fd)

    def close(self) -> None:
        if self.fd >= 0:
            close_tun(self.fd)
            self.fd = -1


def configure_commands(plan: HostPlan) -> list[list[str]]:
    dev = plan.ifname
    cmds = [
        ["link", "set", dev, "mtu", str(plan.mtu_bytes)],
        ["addr", "replace", f"{plan.address}/{plan.prefix_len}", "dev", dev],
        ["link", "set", dev, "up"],
    ]
    # replace: a route left by a crashed earlier agent must not stop this one.
    cmds += [["route", "replace", p, "dev", dev, "src", plan.address] for p in plan.routes]
    return cmds


async def _ip(args: list[str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        "ip", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise ConfigError(
            f"`ip {' '.join(args)}` failed: {err.decode().strip()}; the agent needs "
            "CAP_NET_ADMIN in the node's network namespace"
        )


def _set_sysctl(path: str, value: str) -> None:
    try:
        with open(f"/proc/sys/{path}", "w") as f:
            f.write(value)
    except OSError as exc:
        log.warning("cannot set sysctl %s=%s (%s); replies may be filtered", path, value, exc)
