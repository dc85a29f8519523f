"""The CNI network configuration this agent implements, written where a runtime looks for it.

A kubelet's container runtime finds its network in ``/etc/cni/net.d/*.conflist``: a network
configuration list (CNI spec 1.0.0, https://www.cni.dev/docs/spec/#network-configuration-lists)
naming a chain of plugins run in order at ADD.  Seed 001 shows Calico's: the ``calico`` plugin
with ``host-local`` IPAM over the node's podCIDR (``"subnet": "usePodCidr"``) and a ``k8s``
policy section, then ``portmap`` with ``"capabilities": {"portMappings": true}`` (the runtime
passes the pod's hostPorts to plugins that declare that capability).

knemu's agent is that chain, so it writes the list it actually implements, built from its
config: the ``knemu`` plugin (TUN eth0 with the pod MTU, VXLAN port and VNI, host-local IPAM
with ``usePodCidr`` resolved into host-local's own ``ranges`` form, ``policy`` only when
NetworkPolicy is enforced) and ``portmap`` only when hostPorts are published.  ``conflist`` is
pure; ``write`` replaces the file atomically, so a reader never sees half of it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knemu.config import DEFAULT_AGENT_STATE_DIR, AgentConfig

log = logging.getLogger(__name__)

CNI_VERSION = "1.0.0"
NETWORK_NAME = "knemu"
CONFLIST_NAME = "10-knemu.conflist"  # lowest name wins, as the runtime picks the first file
SYSTEM_CONF_DIR = "/etc/cni/net.d"


@dataclass(frozen=True)
class CniConfig:
    path: Path | None  # where it was written; None if it could not be
    text: str  # the conflist JSON, as written and as ``GET /cni`` serves it


def conf_dir(config: AgentConfig) -> Path:
    """Where the conflist goes: ``cni_conf_dir`` if set; else /etc/cni/net.d for an agent that
    owns its machine (the default state_dir, as in a compose node container, whose /etc is its
    own) and ``<state_dir>/cni/net.d`` for one given its own state_dir (``knemu up`` runs
    several agents on one host and must never write the host's /etc)."""
    if config.cni_conf_dir:
        return Path(config.cni_conf_dir)
    if config.state_dir == DEFAULT_AGENT_STATE_DIR:
        return Path(SYSTEM_CONF_DIR)
    return Path(config.state_dir) / "cni" / "net.d"


def host_local_ipam(pod_cidr: str, gateway_ip: str) -> dict[str, Any]:
    """host-local over the podCIDR: every address but network, gateway and broadcast, as
    ``node_agent.ipam`` allocates them; default route via eth0 (pods get ``default dev eth0``)."""
    net = ipaddress.IPv4Network(pod_cidr)
    gateway = ipaddress.IPv4Address(gateway_ip)
    first, last = net.network_address + 1, net.broadcast_address - 1
    # host-local skips the gateway wherever it is; at an end of the range, leave it out.
    start = first + 1 if first == gateway else first
    end = last - 1 if last == gateway else last
    pool = {"subnet": str(net), "rangeStart": str(start), "rangeEnd": str(end),
            "gateway": gateway_ip}  # fmt: skip
    return {
        "type": "host-local",
        "subnet": "usePodCidr",  # what an operator writes (Calico); resolved in ranges
        "ranges": [[pool]],  # host-local: a list of range sets, each a list of ranges
        "routes": [{"dst": "0.0.0.0/0"}],
    }


def conflist(config: AgentConfig, node_name: str, pod_cidr: str, gateway_ip: str) -> dict[str, Any]:
    """The network configuration list of this node."""
    plugin: dict[str, Any] = {
        "type": "knemu",
        "nodename": node_name,
        "mtu": config.pod_mtu_or_default,
        "ipam": host_local_ipam(pod_cidr, gateway_ip),
    }
    if config.network_policy:  # Calico's "policy": {"type": "k8s"}: it enforces NetworkPolicy
        plugin["policy"] = {"type": "k8s"}
    plugin["vxlan"] = {"port": config.vxlan_port, "vni": config.vni}
    plugins = [plugin]
    if config.host_ports:
        plugins.append({"type": "portmap", "capabilities": {"portMappings": True}})
    return {"cniVersion": CNI_VERSION, "name": NETWORK_NAME, "plugins": plugins}


def render(conf: dict[str, Any]) -> str:
    return json.dumps(conf, indent=2) + "\n"


def write(directory: Path, text: str) -> Path:
    """Write ``CONFLIST_NAME`` under ``directory`` atomically (temp file, then rename)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CONFLIST_NAME
    tmp = directory / f".{CONFLIST_NAME}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def install(config: AgentConfig, node_name: str, pod_cidr: str, gateway_ip: str) -> CniConfig:
    """Build this node's conflist and write it; a directory that cannot be written is logged
    (the data plane does not need the file) and the list is still served over HTTP."""
    text = render(conflist(config, node_name, pod_cidr, gateway_ip))
    directory = conf_dir(config)
    try:
        path: Path | None = write(directory, text)
        log.info("wrote the CNI config %s", path)
    except OSError as exc:
        log.warning("cannot write the CNI config to %s (%s); set cni_conf_dir to a writable "
                    "directory", directory / CONFLIST_NAME, exc)  # fmt: skip
        path = None
    return CniConfig(path, text)
