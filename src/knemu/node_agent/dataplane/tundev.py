"""The TUN character device ``/dev/net/tun``, made by the agent when its container lacks it.

Docker compose maps the host's device into a node container (``devices:``), but Docker Swarm
services cannot map devices, so a node running as a Swarm task starts without it.  The device
is only a name for the kernel's TUN driver (major 10, minor 200: the kernel's
Documentation/admin-guide/devices.txt, "misc" 200 = ``/dev/net/tun``), so the agent creates the
node with ``mknod`` -- as ``ip tuntap``'s documentation tells users to do -- which needs
CAP_MKNOD (in Docker's default set) and a device cgroup that allows ``c 10:200`` (Docker's
default rules do).  Nothing is made when the device exists; a path that exists but is not the
TUN device is an error, never overwritten.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass

from knemu.errors import ConfigError
from knemu.node_agent.dataplane.tun import TUN_DEVICE

log = logging.getLogger(__name__)

TUN_MAJOR = 10
TUN_MINOR = 200
TUN_MODE = 0o666  # as udev creates it: the driver itself checks CAP_NET_ADMIN on TUNSETIFF


@dataclass(frozen=True)
class TunDevice:
    """What ``ensure_tun_device`` found or did."""

    path: str
    created: bool


def ensure_tun_device(path: str = TUN_DEVICE) -> TunDevice:
    """Make ``path`` the TUN character device (c 10 200) unless it already is; log a creation."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        pass  # made below (a file in the way of /dev/net fails there, with the fix named)
    else:
        if (
            stat.S_ISCHR(st.st_mode)
            and os.major(st.st_rdev) == TUN_MAJOR
            and (os.minor(st.st_rdev) == TUN_MINOR)
        ):
            return TunDevice(path, created=False)
        raise ConfigError(
            f"{path} exists but is not the TUN device (character device {TUN_MAJOR}:{TUN_MINOR});"
            " remove it or map the host's /dev/net/tun into the node"
        )
    try:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        os.mknod(path, stat.S_IFCHR | TUN_MODE, os.makedev(TUN_MAJOR, TUN_MINOR))
        os.chmod(path, TUN_MODE)  # mknod's mode is filtered by the umask
    except OSError as exc:
        raise ConfigError(
            f"{path} is missing and cannot be created ({exc.strerror}): give the node "
            "CAP_MKNOD (Docker grants it by default) or map the host's /dev/net/tun into it"
        ) from None
    log.info("created %s (character device %d:%d): none was mapped into this node",
             path, TUN_MAJOR, TUN_MINOR)  # fmt: skip
    return TunDevice(path, created=True)
