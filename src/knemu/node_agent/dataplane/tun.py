"""TUN devices: a pod's eth0 whose file descriptor the agent keeps.

A TUN device is the pod's "host-side virtual interface" (Calico's ``cali*``, DESIGN.md "Data
plane"): every IP packet the pod sends comes out of the fd; writing a packet to the fd delivers
it to the pod.  The device is created in the node's namespace with ``TUNSETIFF``
(``IFF_TUN | IFF_NO_PI``: raw IP packets, no 4-byte packet-information header; see the kernel's
Documentation/networking/tuntap.rst), then moved into the pod's namespace.  The fd stays
valid across the move: the file is bound to the device, not to a namespace.

With ``offload`` the device also gets ``IFF_VNET_HDR`` and ``TUNSETOFFLOAD(TUN_F_CSUM |
TUN_F_TSO4)``: every read and write starts with a ``virtio_net_hdr``, and the pod's kernel may
hand over TCP super-packets of up to 64 KB with their checksums left to do -- the reader
promised to segment and checksum them (``dataplane.offload``), as wireguard-go does.
"""

from __future__ import annotations

import fcntl
import os
import struct

TUN_DEVICE = "/dev/net/tun"
TUNSETIFF = 0x400454CA  # _IOW('T', 202, int), linux/if_tun.h
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUNSETOFFLOAD = 0x400454D0  # _IOW('T', 208, unsigned int)
TUN_F_CSUM = 0x01  # the reader completes checksums (virtio NEEDS_CSUM)
TUN_F_TSO4 = 0x02  # ... and cuts IPv4 TCP super-packets (virtio GSO_TCPV4)
IFNAMSIZ = 16  # including the terminating NUL: names have at most 15 characters


def check_ifname(name: str) -> None:
    """Raise ValueError unless ``name`` is a valid Linux interface name."""
    if not 0 < len(name.encode()) < IFNAMSIZ or "/" in name or " " in name or name in (".", ".."):
        raise ValueError(
            f"interface name {name!r} is invalid: use 1-15 characters without '/' or spaces"
        )


def open_tun(name: str, offload: bool = False) -> int:
    """Create TUN device ``name`` in the caller's network namespace; return its non-blocking fd
    (with ``offload``: virtio-net headers and TCP segmentation offload, see above).

    The device lives as long as the fd is open (it is not made persistent), so closing the fd
    (``close_tun``) removes the device wherever it is, also inside a pod namespace.
    """
    check_ifname(name)
    fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    try:
        flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if offload else 0)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
        if offload:
            fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4)
        os.set_blocking(fd, False)
    except OSError as exc:
        os.close(fd)
        raise OSError(
            exc.errno,
            f"cannot create TUN device {name!r} via {TUN_DEVICE}: {exc.strerror}; "
            "the agent needs CAP_NET_ADMIN and /dev/net/tun (run privileged)",
        ) from None
    return fd


def close_tun(fd: int) -> None:
    """Close a TUN fd (which deletes its device); closing twice is harmless."""
    try:
        os.close(fd)
    except OSError:
        pass
