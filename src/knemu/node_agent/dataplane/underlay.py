"""The node's underlay link, read from iproute2: which interface holds the underlay address,
and so which MTU pods get (the decision is ``dataplane.mtu``'s, a sans-I/O core); and how the
underlay socket sends as a VXLAN VTEP."""

from __future__ import annotations

import asyncio
import logging

from knemu.errors import ConfigError
from knemu.node_agent.dataplane.adapters import UnderlayEndpoint
from knemu.node_agent.dataplane.backends.vxlan import DF_SET, VxlanBackend
from knemu.node_agent.dataplane.mtu import (
    VXLAN_OVERHEAD_BYTES,
    PodMtu,
    UnderlayLink,
    choose_pod_mtu,
    find_link,
)

log = logging.getLogger(__name__)


async def read_underlay_link(address: str) -> UnderlayLink | None:
    """Ask iproute2 which interface of this namespace holds ``address`` (None: none does)."""
    argv = ("ip", "-j", "addr", "show")
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
    except OSError as exc:
        raise ConfigError(
            f"cannot run `{' '.join(argv)}` to read the underlay MTU ({exc.strerror}); "
            "install iproute2 or set --mtu"
        ) from None
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise ConfigError(
            f"`{' '.join(argv)}` exited {proc.returncode}: {err.decode(errors='replace').strip()}"
            "; set --mtu to skip reading the underlay MTU"
        )
    return find_link(out.decode(errors="replace"), address)


async def resolve_pod_mtu(
    configured_bytes: int,
    underlay_ip: str,
    overhead_bytes: int = VXLAN_OVERHEAD_BYTES,
    backend: str = "vxlan",
) -> PodMtu:
    """The pod MTU for this node: reads the underlay link only when none is configured."""
    link = None if configured_bytes else await read_underlay_link(underlay_ip)
    return choose_pod_mtu(configured_bytes, underlay_ip, link, overhead_bytes, backend)


def send_as_vtep(underlay: UnderlayEndpoint, backend: VxlanBackend, bound_port: int) -> None:
    """Outer DF and per-flow source ports as ``backend`` says (see ``backends.vxlan``).  The
    per-flow ports need a raw socket; without CAP_NET_RAW every flow keeps ``bound_port``
    (still valid VXLAN: RFC 7348's source-port hash is a recommendation)."""
    underlay.set_dont_fragment(backend.df == DF_SET)
    if backend.source_ports == (bound_port, bound_port):
        return
    try:
        underlay.send_from_ports(backend.source_port)
    except PermissionError:
        log.warning("no raw socket (CAP_NET_RAW) for per-flow VXLAN source ports; "
                    "sending every flow from port %d", bound_port)  # fmt: skip
