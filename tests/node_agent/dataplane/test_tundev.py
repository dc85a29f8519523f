"""The agent makes /dev/net/tun when its container has none (node_agent/dataplane/tundev.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from knemu.errors import ConfigError
from knemu.node_agent.dataplane.tundev import TunDevice, ensure_tun_device

needs_mknod = pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a device needs root")


@needs_mknod
def test_missing_device_is_created_once(tmp_path: Path) -> None:
    path = tmp_path / "net" / "tun"
    assert ensure_tun_device(str(path)) == TunDevice(str(path), created=True)
    st = path.stat()
    assert stat.S_ISCHR(st.st_mode)
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (10, 200)
    assert stat.S_IMODE(st.st_mode) == 0o666
    assert ensure_tun_device(str(path)) == TunDevice(str(path), created=False)


def test_the_real_device_is_left_alone() -> None:
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("this machine has no /dev/net/tun")
    before = os.stat("/dev/net/tun")
    assert ensure_tun_device() == TunDevice("/dev/net/tun", created=False)
    assert os.stat("/dev/net/tun").st_ino == before.st_ino


def test_something_else_at_the_path_is_an_error_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "tun"
    path.write_text("not a device")
    with pytest.raises(ConfigError, match="exists but is not the TUN device"):
        ensure_tun_device(str(path))
    assert path.read_text() == "not a device"


def test_uncreatable_device_names_the_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "net"
    blocker.write_text("a file where the directory should be")
    with pytest.raises(ConfigError, match=r"cannot be created.*CAP_MKNOD"):
        ensure_tun_device(str(blocker / "tun"))
