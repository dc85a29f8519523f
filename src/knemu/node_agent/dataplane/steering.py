"""externalTrafficPolicy: Local NodePorts: steer their packets from the underlay into the router.

Why.  A NodePort normally reaches its service through the userspace relay
(``kubeproxy.nodeport``): the node's kernel accepts the client's connection and the relay opens
a new one, so the pod sees the node's gateway as its client.  That is the masquerade
``externalTrafficPolicy: Cluster`` implies anyway; ``Local`` promises the opposite, the
client's own address in the pod (https://kubernetes.io/docs/tasks/access-application-cluster/
create-external-load-balancer/#preserving-the-client-source-ip).  kube-proxy keeps it by
DNATing the original packet in the kernel.  Here the router is that NAT, so the original
packet has to reach the router: for every (protocol, nodePort) of a Local service a policy
routing rule sends packets that arrive on the underlay interface for that port into the host
TUN instead of delivering them to the node's own stack::

    ip rule add pref 50 iif eth0 ipproto tcp dport 30080 lookup 4789
    ip route replace default dev knemu0 table 4789

The kernel forwards the untouched packet (client 192.168.59.2 -> node IP:30080) into
``knemu0``; ``Router.handle_host`` matches the nodePort rule, whose ``external`` twin picks a
local endpoint and DNATs without masquerading (``CompiledPort.preserve_source``).  The pod's
reply is un-NATed (source node IP:30080 again) and handed back to the host TUN, and the kernel
forwards it out of the underlay interface to the client, which sees an ordinary connection to
the node.  Two kernel settings make that possible: the ``local`` routing table moves from
preference 0 to 100 so that the rule above is consulted before local delivery (the usual
policy-routing arrangement for VRFs and TPROXY), and ``accept_local`` on ``knemu0`` lets the
kernel forward a packet whose source is one of its own addresses (the un-NATed reply).

LoadBalancer addresses (MetalLB L2, ``kubeproxy.l2announce``) use the same table: the node that
announces an address puts it on ``knemu0`` as a /32, so the kernel answers ARP for it on the
underlay (``arp_ignore`` 0: any local address) and forgets it the moment the agent dies (the
TUN goes with its fd, so a killed node stops answering at once), sends a gratuitous ARP, and
steers its TCP and UDP from the underlay into the router (``iif eth0 to IP/32``), where the
service's external rule translates it like a nodePort's (TCP and UDP only: ARP for
the address must still find the local table).

Only packets from the underlay interface are steered: the node's own processes (``iif lo``)
still reach the port through the relay, and nothing the router hands to the host can loop back
into it.  Cluster-policy NodePorts keep the relay, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterable
from pathlib import Path

from knemu.errors import ConfigError
from knemu.node_agent.kubeproxy.l2announce import ETH_P_ARP, garp

log = logging.getLogger(__name__)

RULE_PREF = 50  # before the local table, which moves to LOCAL_PREF
LOCAL_PREF = 100
TABLE = 4789  # a routing table of the node's namespace that holds one route: into knemu0

Port = tuple[str, int]  # ("TCP" | "UDP", nodePort)


def rule_args(action: str, iif: str, port: Port) -> list[str]:
    """``ip rule add|del`` arguments for one steered nodePort."""
    proto, number = port
    return ["rule", action, "pref", str(RULE_PREF), "iif", iif, "ipproto", proto.lower(),
            "dport", str(number), "lookup", str(TABLE)]  # fmt: skip


def address_args(action: str, iif: str, host_ifname: str, ip: str) -> list[list[str]]:
    """Announcing a LoadBalancer address: on the host TUN, and its TCP and UDP steered from
    the underlay.  Per protocol, not the whole address: the kernel answers an ARP request only
    when the route lookup for its target (protocol 0) still finds the local table."""
    rules = [["rule", action, "pref", str(RULE_PREF), "iif", iif, "to", f"{ip}/32", "ipproto",
              proto, "lookup", str(TABLE)] for proto in ("tcp", "udp")]  # fmt: skip
    addr = ["addr", action, f"{ip}/32", "dev", host_ifname]
    return [addr, *rules] if action == "add" else [*rules, addr]


def setup_args(host_ifname: str) -> list[list[str]]:
    """The table's route, then the local table moved behind the steering rules (added at its
    new preference before it leaves the old one: local delivery never lapses)."""
    return [
        ["route", "replace", "default", "dev", host_ifname, "table", str(TABLE)],
        ["rule", "add", "pref", str(LOCAL_PREF), "lookup", "local"],
        ["rule", "del", "pref", "0", "lookup", "local"],
    ]


def local_rule_at(rules: str, pref: int) -> bool:
    """Whether ``ip rule show`` output has the local table's rule at preference ``pref``."""
    return any(
        line.split(":", 1)[0] == str(pref) and line.split()[-2:] == ["lookup", "local"]
        for line in rules.splitlines()
    )


class Steering:
    """The steering rules of this node; ``apply`` makes them match the desired ports."""

    def __init__(self, underlay_ip: str, host_ifname: str) -> None:
        self._underlay_ip = underlay_ip
        self._host = host_ifname
        self._iif = ""
        self.ports: set[Port] = set()
        self.addresses: set[str] = set()  # LoadBalancer addresses this node announces

    async def start(self) -> None:
        """Find the underlay interface, forget rules a crashed agent left, set the table up.
        A node where this fails keeps working; its Local NodePorts go through the relay (the
        client's address is then lost) and the reason is logged."""
        try:
            await self._setup()
        except ConfigError as exc:
            self._iif = ""
            log.warning("externalTrafficPolicy Local will not keep client addresses: %s",
                        exc.message)  # fmt: skip

    async def _setup(self) -> None:
        out = await _ip(["-o", "-4", "addr", "show", "to", f"{self._underlay_ip}/32"]) or ""
        words = out.split()
        if len(words) < 2:
            raise ConfigError(f"no interface holds the underlay address {self._underlay_ip}")
        self._iif = words[1]
        while await _ip(["rule", "del", "pref", str(RULE_PREF)], check=False) is not None:
            pass  # stale rules of an earlier agent in this namespace
        rules = await _ip(["rule", "show"]) or ""
        for args in setup_args(self._host):
            if args[:2] == ["rule", "add"] and local_rule_at(rules, LOCAL_PREF):
                continue
            if args[:2] == ["rule", "del"] and not local_rule_at(rules, 0):
                continue
            await _ip(args)
        _set_sysctl(f"net/ipv4/conf/{self._host}/accept_local", "1")

    async def apply(self, desired: Iterable[Port]) -> None:
        want = set(desired)
        if not self._iif:
            return
        for port in sorted(self.ports - want):
            await _ip(rule_args("del", self._iif, port), check=False)
            self.ports.discard(port)
        for port in sorted(want - self.ports):
            if await _ip(rule_args("add", self._iif, port), check=False) is None:
                log.warning("cannot steer nodePort %s/%d: its clients' addresses are lost "
                            "(it is still served through the relay)", port[0], port[1])  # fmt: skip
                continue
            self.ports.add(port)

    async def announce(self, desired: Iterable[str]) -> None:
        """Hold exactly the ``desired`` LoadBalancer addresses (module doc)."""
        want = set(desired)
        if not self._iif:
            return
        for ip in sorted(self.addresses - want):
            for args in address_args("del", self._iif, self._host, ip):
                await _ip(args, check=False)
            self.addresses.discard(ip)
            log.info("no longer announcing %s", ip)
        for ip in sorted(want - self.addresses):
            for args in address_args("add", self._iif, self._host, ip):
                await _ip(args, check=False)
            self.addresses.add(ip)
            self._gratuitous_arp(ip)
            log.info("announcing %s on %s", ip, self._iif)

    def _gratuitous_arp(self, ip: str) -> None:
        try:
            mac = Path(f"/sys/class/net/{self._iif}/address").read_text().strip()
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as s:
                s.bind((self._iif, 0))
                s.send(garp(mac, ip))
        except (OSError, ValueError) as exc:  # clients then learn the MAC when they ARP
            log.warning("gratuitous ARP for %s on %s failed: %s", ip, self._iif, exc)

    async def close(self) -> None:
        await self.apply(())
        with contextlib.suppress(ConfigError):
            await self.announce(())


async def _ip(args: list[str], check: bool = True) -> str | None:
    """Run ``ip ARGS``; its output, or None when it failed and ``check`` is false."""
    proc = await asyncio.create_subprocess_exec(
        "ip", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        if not check:
            return None
        raise ConfigError(
            f"`ip {' '.join(args)}` failed: {err.decode().strip()}; the agent needs "
            "CAP_NET_ADMIN in the node's network namespace"
        )
    return out.decode()


def _set_sysctl(path: str, value: str) -> None:
    try:
        with open(f"/proc/sys/{path}", "w") as f:
            f.write(value)
    except OSError as exc:
        log.warning("cannot set sysctl %s=%s (%s); Local NodePort replies may be dropped",
                    path, value, exc)  # fmt: skip
