"""hostNetwork pods: the node's network namespace, the pod's own UTS namespace and /etc files.

A pod with ``spec.hostNetwork: true`` "uses the host's network namespace" (PodSpec.hostNetwork,
https://kubernetes.io/docs/concepts/workloads/pods/#pod-networking): there is no CNI ADD, no
TUN and no IPAM address; its IP (status.podIP) is the node's InternalIP, its ports are the
node's and its hostname is the node's name.  Here the node's namespace is the agent's own
(compose: the node container's; ``knemu up``: the node namespace the agent was started in).

The sandbox is a pause process ``unshare --uts`` (no ``--net``: it stays in the node's
namespace; and no IPv6 switch-off, which would change the node's own settings) that sets the
hostname.  ``ip netns attach <netns> <pause>`` gives the node's namespace one more name, per
pod, so ``ip netns exec <netns>`` binds that pod's ``/etc/netns/<netns>/resolv.conf`` and
``hosts`` for its containers exactly as for other pods (``containers.spawn_in_pod`` is
unchanged).  Teardown kills the processes of the pod's UTS namespace and deletes the name
(``sandbox.kill_netns_processes``, ``sandbox.clean_netns``); nothing network-wise is freed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from knemu.errors import LocalError, PodRuntimeError
from knemu.node_agent.runtime import sandbox as sb
from knemu.proto import knemu_pb2 as pb

NODE_HOSTS = Path("/etc/hosts")


@dataclass(frozen=True)
class NetworkPlan:
    """What the CNI step does for one pod (sans-I/O: decided before anything is built)."""

    host_network: bool
    hostname: str
    pod_ip: str  # the node's IP for a hostNetwork pod; "" = allocate from the podCIDR


def plan_network(pod: pb.Pod, node_name: str, node_ip: str) -> NetworkPlan:
    """hostNetwork: the node's name and IP, no address of its own; else the pod's hostname
    (spec.hostname or its name) and an address from IPAM."""
    if not pod.host_network:
        return NetworkPlan(False, sb.pod_hostname(pod.metadata.name, pod.hostname), "")
    if not node_ip:
        raise LocalError(
            f"pod {pod.metadata.namespace}/{pod.metadata.name} has hostNetwork: true but node "
            f"{node_name} knows no IP of its own; start the agent with its underlay IP"
        )
    return NetworkPlan(True, sb.pod_hostname(node_name), node_ip)


def host_network_hosts_file(node_hosts: str) -> str:
    """The kubelet gives a hostNetwork pod the node's /etc/hosts (kubelet_pods.go,
    nodeHostsFileContent), under its managed-file header."""
    body = node_hosts if node_hosts.endswith("\n") or not node_hosts else node_hosts + "\n"
    return "# Kubernetes-managed hosts file (host network).\n" + body


async def create_host_sandbox(
    *, netns: str, hostname: str, node_ip: str, resolv_conf: str
) -> sb.Sandbox:
    """The sandbox of a hostNetwork pod; on failure everything built so far is removed.

    Raises PodRuntimeError (also for OS errors)."""
    box = sb.Sandbox(netns, hostname, 0, -1, "", node_ip, host_network=True)
    try:
        sb.write_etc_files(netns, resolv_conf, host_network_hosts_file(NODE_HOSTS.read_text()))
        box.pause = await sb.start_pause(hostname, host_network=True)
        box.pause_pid = box.pause.pid
        box.start_ticks = sb.process_start_ticks(box.pause_pid) or 0
        await sb.run_netns_cmd("attach", netns, str(box.pause_pid), what="netns attach")
    except BaseException as exc:
        await sb.destroy_sandbox(box)
        if isinstance(exc, OSError):
            raise PodRuntimeError(f"cannot build the sandbox {netns}: {exc}") from exc
        raise
    return box
