"""The kubelet's AtomicWriter (pkg/volume/util/atomic_writer.go): a configMap/secret/
downwardAPI volume changes all at once, so a reader never sees half of an update.

Layout of a volume directory::

    ..2026_12_02_06_30_00.123456789/   this version's files
    ..data -> ..2026_12_02_06_30_00.123456789
    KEY -> ..data/KEY                   one symlink per top-level name the user sees

An update writes a new timestamped directory, points a ``..data_tmp`` symlink at it and
renames that over ``..data`` (rename(2) is atomic), then adds and removes the user-visible
symlinks and deletes the old directory.  The symlinks are relative, so they resolve the same
inside a container that bind-mounts the volume.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from knemu.node_agent.runtime.config_sources import VolumeFile

DATA = "..data"
DATA_TMP = "..data_tmp"


def _version_name() -> str:
    ns = time.time_ns()
    stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime(ns // 1_000_000_000))
    return f"..{stamp}.{ns % 1_000_000_000:09d}"


def current(target: Path) -> dict[str, bytes]:
    """The files the volume shows now (relative path -> content), for checks and tests."""
    data = target / DATA
    if not data.is_dir():
        return {}
    return {
        str(p.relative_to(data)): p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file()
    }


def write(target: Path, files: Mapping[str, VolumeFile]) -> bool:
    """Make ``target`` show exactly ``files``; False if it already did (nothing written)."""
    target.mkdir(parents=True, exist_ok=True)
    old = os.readlink(target / DATA) if (target / DATA).is_symlink() else ""
    if old and _same(target / old, files):
        return False
    version = target / _version_name()
    version.mkdir(mode=0o755)
    for rel, item in files.items():
        path = version / rel
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        path.write_bytes(item.data)
        path.chmod(item.mode)
    tmp = target / DATA_TMP
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(version.name)
    os.rename(tmp, target / DATA)  # the atomic step
    visible = {PurePosixPath(rel).parts[0] for rel in files}
    for name in visible:
        link = target / name
        if not link.is_symlink():
            link.symlink_to(f"{DATA}/{name}")
    for entry in target.iterdir():
        if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in visible:
            entry.unlink()
    if old:
        shutil.rmtree(target / old, ignore_errors=True)
    return True


def _same(version: Path, files: Mapping[str, VolumeFile]) -> bool:
    try:
        have = {str(p.relative_to(version)) for p in version.rglob("*") if p.is_file()}
        if have != set(files):
            return False
        return all(
            (version / rel).read_bytes() == item.data
            and (version / rel).stat().st_mode & 0o7777 == item.mode
            for rel, item in files.items()
        )
    except OSError:
        return False
