"""The agent's portmap plugin: admit pods' hostPorts, publish them on the node IP, say what fails.

``PodSync`` calls ``admit(pod)`` before it starts a pod (the kubelet's admission; a clash
rejects the pod), ``attach(key, ip)`` once the pod's sandbox has its address, and
``release(key)`` when the pod stops or goes away.  Those only change the sans-I/O
``PortMapTable``; one loop (``run``) then makes the listeners of a ``PortProxy`` equal to the
table, so pod workers running in parallel never open one port twice.  A port that another
process on the node holds (or a hostIP the node does not have) becomes a Warning event on the
pod and is retried every ``RETRY_S`` until it can be listened on.

With ``host_ports`` off the conflist has no ``portmap`` plugin and nothing is published, as on
a cluster whose CNI chain lacks it (the hostPort is then silently reachable only at the pod IP;
here the pod gets an event saying so).  Admission still refuses clashes: the kubelet checks
host ports whatever the network plugin.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from knemu.node_agent.cni import portmap
from knemu.node_agent.kubeproxy.nodeport import PortProxy
from knemu.node_agent.kubeproxy.relays import RELAYED_PROTOCOLS, ProxyStatistics, Relay
from knemu.proto import knemu_pb2 as pb

RETRY_S = 5.0  # how often a hostPort that another process holds is tried again

EventSink = Callable[[str, str, str, str], None]  # (pod key, type, reason, message)


class HostPorts:
    def __init__(self, record: EventSink, enabled: bool = True) -> None:
        self.enabled = enabled
        self.table = portmap.PortMapTable()
        self.proxy = PortProxy("hostPort")
        self._record = record
        self._dirty = asyncio.Event()
        self._reported: set[Relay] = set()

    @property
    def stats(self) -> ProxyStatistics:
        return self.proxy.stats

    def admit(self, pod: pb.Pod) -> portmap.Clash | None:
        """Reserve the pod's host ports; the clash that forbids it, if any."""
        key = f"{pod.metadata.namespace}/{pod.metadata.name}"
        mappings = portmap.requested(pod)
        new = not self.table.holds(key)
        clash = self.table.admit(key, mappings)
        if clash is None and new:
            self._explain_unpublished(key, mappings)
        return clash

    def _explain_unpublished(self, key: str, mappings: tuple[portmap.PortMapping, ...]) -> None:
        if mappings and not self.enabled:
            ports = ", ".join(str(m.host) for m in mappings)
            self._record(key, "Warning", "HostPortNotPublished",
                         f"hostPort {ports} is not published: this node's CNI chain has no "
                         "portmap plugin (agent started with --no-host-ports); the port is "
                         "reachable at the pod IP only")  # fmt: skip
            return
        for m in mappings:
            if m.host.protocol not in RELAYED_PROTOCOLS:
                self._record(key, "Warning", "HostPortNotPublished",
                             f"hostPort {m.host} is reserved but not published: knemu relays "
                             "TCP and UDP only")  # fmt: skip

    def attach(self, key: str, pod_ip: str) -> None:
        if self.table.set_pod_ip(key, pod_ip):
            self._dirty.set()

    def release(self, key: str) -> None:
        if self.table.release(key):
            self._dirty.set()

    def desired(self, node_ip: str) -> list[Relay]:
        return self.table.relays(node_ip) if self.enabled else []

    async def run(self, node_ip: str) -> None:
        """Keep the listeners equal to the table (the agent runs this as a named loop)."""
        while True:
            self._dirty.clear()
            failed = await self.proxy.apply(self.desired(node_ip))
            self._report(failed)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), RETRY_S if failed else None)

    def _report(self, failed: dict[Relay, str]) -> None:
        """One event per port that cannot be listened on, until it can."""
        for relay, why in sorted(failed.items()):
            key = self.table.holder(relay)
            if relay in self._reported or key is None:
                continue
            self._record(key, "Warning", "HostPortUnavailable",
                         f"hostPort {relay.listen_port}/{relay.protocol} on {relay.listen_ip}: "
                         f"cannot listen ({why}); free the port if another process holds it "
                         f"(tried again every {RETRY_S:.0f} s), or choose another hostPort, "
                         "or a hostIP this node has")  # fmt: skip
        self._reported = set(failed)

    async def close(self) -> None:
        await self.proxy.close()
