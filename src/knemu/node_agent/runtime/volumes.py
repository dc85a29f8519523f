"""Pod volumes for runc containers: emptyDir (``medium: Memory`` as tmpfs), hostPath,
downwardAPI, configMap and secret (https://kubernetes.io/docs/concepts/storage/volumes/).

``plan_mounts`` and ``downward_files`` are pure; ``PodVolumes`` makes the directories:
``<state_dir>/volumes/<pod netns>/<volume>``, a tmpfs mounted there for ``medium: Memory``
(in the agent's own mount namespace: a private one under ``knemu up``, the node container's
under compose, so it cannot outlive the node).  ``remove`` unmounts and deletes them when the
pod goes.  configMap and secret volumes are written by ``write_sources`` (again on every
change of their objects) through the kubelet's atomic ``..data`` swap (``atomic_writer``); a
secret volume is a tmpfs, as the kubelet keeps secrets off disk.  The pod's ServiceAccount
token, the cluster CA and its namespace are written the same way into the ``TOKEN_VOLUME``
directory (the kubelet's ``kube-api-access`` projected volume), which every container gets
read-only at /var/run/secrets/kubernetes.io/serviceaccount (``token_mount``).  Other sources
are refused with a message naming them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path, PurePosixPath

from knemu.errors import LocalError
from knemu.node_agent.runtime import atomic_writer
from knemu.node_agent.runtime.config_sources import (
    SERVICE_ACCOUNT_DIR,
    TOKEN_KEY,
    TOKEN_VOLUME,
    Sources,
    VolumeFile,
    volume_files,
)
from knemu.node_agent.runtime.downward import FieldRefError, PodFields, field_value
from knemu.node_agent.runtime.oci_spec import BindMount
from knemu.proto import knemu_pb2 as pb

SOURCE_KINDS = ("configMap", "secret")
HOST_PATH_TYPES = ("", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket",
                   "CharDevice", "BlockDevice")  # fmt: skip


class VolumeError(LocalError):
    """A volume or volume mount that cannot be set up (CreateContainerConfigError)."""


def _safe_relative(path: str, what: str) -> str:
    p = PurePosixPath(path)
    if not path or p.is_absolute() or ".." in p.parts:
        raise VolumeError(f"{what} {path!r} must be a relative path without '..'")
    return str(p)


def plan_mounts(
    volumes: dict[str, str], mounts: list[pb.VolumeMount], container: str
) -> list[BindMount]:
    """Bind mounts for a container's volumeMounts; ``volumes`` maps names to node paths."""
    out = []
    for m in mounts:
        if m.name not in volumes:
            raise VolumeError(
                f"container {container}: volumeMount {m.name!r} names no volume of the pod; "
                "add it under spec.volumes"
            )
        if not m.mount_path.startswith("/"):
            raise VolumeError(f"container {container}: mountPath {m.mount_path!r} is not absolute")
        source = volumes[m.name]
        if m.sub_path:
            source = f"{source}/{_safe_relative(m.sub_path, 'subPath')}"
        out.append(BindMount(source, m.mount_path, m.read_only))
    return out


def token_mount(volumes: dict[str, str], mounts: list[pb.VolumeMount]) -> list[BindMount]:
    """The ServiceAccount token directory, read-only, for a container that does not mount
    something at that path itself (as the ServiceAccount admission plugin leaves those)."""
    path = volumes.get(TOKEN_VOLUME)
    if path is None or any(m.mount_path.rstrip("/") == SERVICE_ACCOUNT_DIR for m in mounts):
        return []
    return [BindMount(path, SERVICE_ACCOUNT_DIR, True)]


def token_files(sources: Sources) -> dict[str, VolumeFile] | None:
    """The files of the pod's token volume; None when it mounts no token."""
    token = sources.get(TOKEN_KEY)
    if token is None or not token.found:
        return None
    return {name: VolumeFile(data, 0o644) for name, data in token.data.items()}


def downward_files(pod: pb.Pod, volume: pb.Volume, pod_ip: str) -> dict[str, str]:
    """Relative file name -> content of a downwardAPI volume."""
    fields = PodFields(pod, pod_ip)
    try:
        return {
            _safe_relative(item.path, "downwardAPI path"): field_value(fields, item.field_path)
            for item in volume.items
        }
    except FieldRefError as exc:
        raise VolumeError(f"downwardAPI volume {volume.name!r}: {exc.message}") from None


class PodVolumes:
    """The node directories of every pod's volumes."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def prepare(self, pod: pb.Pod, netns: str, pod_ip: str) -> dict[str, str]:
        """Make the pod's volumes; volume name -> node path.  VolumeError names the problem."""
        base = self.root / netns
        out: dict[str, str] = {}
        for vol in pod.volumes:
            if vol.kind == "emptyDir":
                path = base / vol.name
                path.mkdir(parents=True, exist_ok=True)
                if vol.medium == "Memory" and not os.path.ismount(path):
                    size = f",size={vol.size_limit_bytes}" if vol.size_limit_bytes else ""
                    _run(["mount", "-t", "tmpfs", "-o", f"mode=1777{size}", "tmpfs", str(path)])
                else:
                    path.chmod(0o1777)  # as the kubelet makes emptyDir: world-writable
                out[vol.name] = str(path)
            elif vol.kind == "hostPath":
                out[vol.name] = self._host_path(vol)
            elif vol.kind == "downwardAPI":
                path = base / vol.name
                path.mkdir(parents=True, exist_ok=True)
                for name, text in downward_files(pod, vol, pod_ip).items():
                    (path / name).parent.mkdir(parents=True, exist_ok=True)
                    (path / name).write_text(text)
                out[vol.name] = str(path)
            elif vol.kind not in SOURCE_KINDS:
                raise VolumeError(
                    f"volume {vol.name!r}: {vol.unsupported or 'its source'} volumes are not "
                    "supported by knemu (emptyDir, hostPath, downwardAPI, configMap and "
                    "secret are)"
                )
        return out

    def write_sources(self, pod: pb.Pod, netns: str, sources: Sources) -> dict[str, str]:
        """Write (or update, atomically) the pod's configMap and secret volumes; volume name
        -> node path.  SourceError names a missing object or key (nothing changes then)."""
        planned = {
            vol.name: (vol, volume_files(vol, sources, pod.metadata.namespace))
            for vol in pod.volumes
            if vol.kind in SOURCE_KINDS
        }
        out = {}
        for name, (vol, files) in planned.items():
            path = self.root / netns / name
            path.mkdir(parents=True, exist_ok=True)
            if vol.kind == "secret" and not os.path.ismount(path):
                _run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(path)])
            atomic_writer.write(path, files)
            out[name] = str(path)
        token = token_files(sources)
        if token is not None:
            path = self.root / netns / TOKEN_VOLUME
            path.mkdir(parents=True, exist_ok=True)
            if not os.path.ismount(path):
                _run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(path)])
            atomic_writer.write(path, token)
            out[TOKEN_VOLUME] = str(path)
        return out

    def _host_path(self, vol: pb.Volume) -> str:
        path, kind = Path(vol.host_path), vol.host_path_type
        if not vol.host_path.startswith("/"):
            raise VolumeError(f"volume {vol.name!r}: hostPath {vol.host_path!r} is not absolute")
        if kind not in HOST_PATH_TYPES:
            raise VolumeError(f"volume {vol.name!r}: hostPath type {kind!r} is not known")
        if kind == "DirectoryOrCreate":
            path.mkdir(parents=True, exist_ok=True)
        elif kind == "FileOrCreate":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(exist_ok=True)
        elif kind == "Directory" and not path.is_dir():
            raise VolumeError(f"volume {vol.name!r}: hostPath {path} is not a directory")
        elif kind == "File" and not path.is_file():
            raise VolumeError(f"volume {vol.name!r}: hostPath {path} is not a file")
        elif kind and not path.exists():
            raise VolumeError(f"volume {vol.name!r}: hostPath {path} does not exist")
        return str(path)

    def remove(self, netns: str) -> None:
        """Unmount (tmpfs) and delete a pod's volume directories."""
        self._unmount_under(self.root / netns)
        shutil.rmtree(self.root / netns, ignore_errors=True)

    def remove_all_except(self, keep: set[str]) -> None:
        with contextlib.suppress(OSError):
            for entry in self.root.iterdir():
                if entry.name not in keep:
                    self.remove(entry.name)

    def _unmount_under(self, path: Path) -> None:
        with contextlib.suppress(OSError):
            for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
                fields = line.split()
                if len(fields) > 4 and fields[4].startswith(f"{path}/"):
                    _run(["umount", "-l", fields[4]], check=False)


def _run(argv: list[str], check: bool = True) -> None:
    """A short mount/umount (milliseconds; the agent's pod start already runs commands)."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    if check and proc.returncode != 0:
        raise VolumeError(f"`{' '.join(argv)}` failed: {proc.stderr.strip()}")
