"""Pods to the api-server: the node masquerades pod traffic to the control plane's address.

Why.  Pods reach the api-server through the ``kubernetes`` Service (10.96.0.1:443, whose
endpoint the api-server publishes: its own address and REST port), as client-go's in-cluster
configuration does.  The router DNATs that to the api-server's address, which is outside the
pod network (the host's side of the switch, or the api-server container), so the packet leaves
through the node's own stack with the pod's address as its source, and the api-server has no
route back to pod addresses.  Real nodes are in the same position for anything outside the
cluster and masquerade it (flannel's ``--ip-masq``, the ip-masq-agent); here only the
control plane's address is masqueraded, so every other flow keeps the pod's address as it
does today::

    iptables -t nat -A POSTROUTING -s 10.244.0.0/16 -d 192.168.59.1/32 -j MASQUERADE

The kernel's conntrack turns the replies back to the pod, and they enter the router through
the host TUN to be un-DNATed there.  A node without iptables (or nf_nat) keeps working; its
pods simply cannot reach the api-server, which is logged.
"""

from __future__ import annotations

import asyncio
import logging
import socket

log = logging.getLogger(__name__)


def rule_args(action: str, cluster_cidr: str, address: str) -> list[str]:
    """``iptables`` arguments for the rule (``-C`` check, ``-A`` add, ``-D`` delete)."""
    comment = "knemu: pods to the api-server"
    return ["-t", "nat", action, "POSTROUTING", "-s", cluster_cidr, "-d", f"{address}/32",
            "-m", "comment", "--comment", comment, "-j", "MASQUERADE"]  # fmt: skip


class ControlPlaneMasquerade:
    def __init__(self, cluster_cidr: str, apiserver_host: str) -> None:
        self._cidr = cluster_cidr
        self._host = apiserver_host
        self.address = ""

    async def start(self) -> None:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                self._host, None, family=socket.AF_INET
            )
        except OSError as exc:
            log.warning("api-server host %s does not resolve (%s): pods cannot reach it",
                        self._host, exc)  # fmt: skip
            return
        address = str(infos[0][4][0])
        if await _iptables(rule_args("-C", self._cidr, address)):
            self.address = address  # an earlier agent in this namespace left it
            return
        if await _iptables(rule_args("-A", self._cidr, address)):
            self.address = address
        else:
            log.warning("cannot masquerade pod traffic to the api-server %s (iptables with "
                        "nf_nat needed): pods cannot reach it", address)  # fmt: skip

    async def close(self) -> None:
        if self.address:
            await _iptables(rule_args("-D", self._cidr, self.address))
            self.address = ""


async def _iptables(args: list[str]) -> bool:
    try:
        proc = await asyncio.create_subprocess_exec(
            "iptables", "-w", "5", *args,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
    except OSError:
        return False
    return await proc.wait() == 0
