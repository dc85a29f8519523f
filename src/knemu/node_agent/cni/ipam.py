"""Host-local IPAM: pod addresses out of the node's podCIDR (the CNI ``host-local`` plugin).

Like ``host-local`` with ``usePodCidr`` (seed 001), every node hands out addresses from its
own podCIDR only: the network address, the gateway (the node's own 10.244.N.1) and the
broadcast address are never given to a pod; the lowest free address is taken first.  When the
range is used up, creating a pod fails with a clear error (seed 002, IP exhaustion): the pod
runtime turns it into a pod event and a Pending status.

Allocations are keyed by pod uid, so a pod re-created by a restarted agent gets its address
back.  ``HostLocalIpam`` is sans-I/O; ``load``/``save`` persist it as a small JSON file.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knemu.errors import ConfigError, Exhausted

STATE_VERSION = 1


@dataclass(frozen=True)
class Allocation:
    ip: str
    pod_key: str  # "namespace/name", for messages and listings
    uid: str


class HostLocalIpam:
    """Address allocator for one podCIDR (sans-I/O)."""

    def __init__(self, pod_cidr: str, gateway_ip: str) -> None:
        try:
            self._net = ipaddress.IPv4Network(pod_cidr)
            gateway = ipaddress.IPv4Address(gateway_ip)
        except ValueError as exc:
            raise ConfigError(
                f"IPAM: bad podCIDR {pod_cidr!r} or gateway {gateway_ip!r}: {exc}"
            ) from None
        if gateway not in self._net:
            raise ConfigError(f"IPAM: gateway {gateway_ip} is outside podCIDR {pod_cidr}")
        self.pod_cidr = str(self._net)
        self.gateway_ip = str(gateway)
        # network, gateway and broadcast are reserved (RFC 919/922 broadcast; host-local's
        # default rangeStart/rangeEnd skip them the same way).
        self._reserved = {self._net.network_address, gateway, self._net.broadcast_address}
        self._by_uid: dict[str, Allocation] = {}
        self._used: set[ipaddress.IPv4Address] = set()

    @property
    def capacity(self) -> int:
        """How many pod addresses the range holds in total."""
        return sum(1 for ip in self._net if ip not in self._reserved)

    def allocations(self) -> list[Allocation]:
        return sorted(self._by_uid.values(), key=lambda a: ipaddress.IPv4Address(a.ip))

    def lookup(self, uid: str) -> str | None:
        alloc = self._by_uid.get(uid)
        return alloc.ip if alloc else None

    def allocate(self, pod_key: str, uid: str) -> str:
        """The pod's address: the one it already holds, else the lowest free one."""
        held = self._by_uid.get(uid)
        if held is not None:
            return held.ip
        for ip in self._net.hosts() if self._net.prefixlen < 31 else self._net:
            if ip not in self._reserved and ip not in self._used:
                self._record(Allocation(str(ip), pod_key, uid))
                return str(ip)
        raise Exhausted(
            f"no free IP in podCIDR {self.pod_cidr} for pod {pod_key}: "
            f"{len(self._used)} addresses in use, {self.capacity} usable; delete pods on this "
            "node or give the cluster a larger cluster CIDR / per-node range"
        )

    def release(self, uid: str) -> str | None:
        """Free the pod's address; returns it (None when the pod held none)."""
        alloc = self._by_uid.pop(uid, None)
        if alloc is None:
            return None
        self._used.discard(ipaddress.IPv4Address(alloc.ip))
        return alloc.ip

    def retain(self, uids: set[str]) -> list[Allocation]:
        """Release every allocation whose pod is not in ``uids``; returns the released ones."""
        gone = [a for uid, a in self._by_uid.items() if uid not in uids]
        for alloc in gone:
            self.release(alloc.uid)
        return gone

    def _record(self, alloc: Allocation) -> None:
        self._by_uid[alloc.uid] = alloc
        self._used.add(ipaddress.IPv4Address(alloc.ip))

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "podCIDR": self.pod_cidr,
            "allocations": [
                {"ip": a.ip, "pod": a.pod_key, "uid": a.uid} for a in self.allocations()
            ],
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Take allocations from ``to_json`` output; entries outside this podCIDR are dropped
        (the node got another range, e.g. after the api-server lost its data)."""
        if state.get("podCIDR") != self.pod_cidr:
            return
        for entry in state.get("allocations", []):
            try:
                ip = ipaddress.IPv4Address(entry["ip"])
                alloc = Allocation(str(ip), str(entry["pod"]), str(entry["uid"]))
            except (KeyError, TypeError, ValueError):
                continue
            if ip in self._net and ip not in self._reserved and ip not in self._used:
                self._record(alloc)


def load(path: Path, pod_cidr: str, gateway_ip: str) -> HostLocalIpam:
    """An allocator restored from ``path`` (a missing or unreadable file starts empty)."""
    ipam = HostLocalIpam(pod_cidr, gateway_ip)
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return ipam
    if isinstance(state, dict):
        ipam.restore(state)
    return ipam


def save(ipam: HostLocalIpam, path: Path) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(ipam.to_json(), indent=1))
    os.replace(tmp, path)
