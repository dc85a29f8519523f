"""One pod's ConfigMaps and Secrets on the node, and a way to wait for them to change.

The kubelet retries a container that is waiting with CreateContainerConfigError on every pod
sync; here the waiting containers retry when the objects they name change (``next_change``),
which is when a retry can first succeed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from knemu.errors import KnemuError
from knemu.node_agent.runtime import config_sources
from knemu.node_agent.runtime.config_sources import (
    TOKEN_KEY,
    NodeCapacity,
    Sources,
    sources_version,
)
from knemu.node_agent.runtime.downward import PodFields
from knemu.node_agent.runtime.volumes import SOURCE_KINDS, PodVolumes
from knemu.proto import knemu_pb2 as pb


class PodSourceState:
    def __init__(self, sources: Sources | None = None) -> None:
        self.sources: Sources = dict(sources or {})
        self.volume_error = ""  # why the configMap/secret volumes cannot be written now
        self._change: asyncio.Future[None] | None = None

    def update(self, sources: Sources) -> bool:
        """Take the api-server's latest answer; True if anything changed."""
        if sources_version(sources) == sources_version(self.sources):
            return False
        self.sources = dict(sources)
        return True

    def notify(self) -> None:
        """Wake every container waiting for a change (after volumes were rewritten)."""
        if self._change is not None and not self._change.done():
            self._change.set_result(None)
        self._change = None

    def next_change(self) -> asyncio.Future[None]:
        """A future that completes at the next ``notify``; take it before checking the
        sources, so that a change between the check and the wait is not missed."""
        if self._change is None:
            self._change = asyncio.get_running_loop().create_future()
        return self._change

    def configure(
        self, spec: pb.Container, pod: pb.Pod, fields: PodFields, capacity: NodeCapacity
    ) -> config_sources.ResolvedEnv:
        """``spec`` with every env value filled in (fieldRef, resourceFieldRef, ConfigMap and
        Secret keys, envFrom); LocalError says why not (CreateContainerConfigError)."""
        source_volumes = {v.name for v in pod.volumes if v.kind in SOURCE_KINDS}
        if self.volume_error and any(m.name in source_volumes for m in spec.volume_mounts):
            raise config_sources.SourceError(self.volume_error)
        containers = {c.name: c for c in pod.containers}
        return config_sources.resolve_env(spec, pod, fields, self.sources, capacity, containers)

    async def write_volumes(
        self, volumes: PodVolumes, pod: pb.Pod, netns: str, paths: dict[str, str]
    ) -> str:
        """Write the pod's configMap/secret volumes into ``paths`` (name -> node path); the
        error to report as FailedMount when it is a new one, else ''."""
        if TOKEN_KEY not in self.sources and not any(v.kind in SOURCE_KINDS for v in pod.volumes):
            return ""
        try:
            written = await asyncio.to_thread(volumes.write_sources, pod, netns, self.sources)
        except (KnemuError, OSError) as exc:
            error = exc.message if isinstance(exc, KnemuError) else str(exc)
            new, self.volume_error = error != self.volume_error, error
            return error if new else ""
        paths.update(written)
        self.volume_error = ""
        return ""


def node_capacity() -> NodeCapacity:
    """The node's CPUs and memory (what it can allocate to pods: all of it here)."""
    memory = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
    return NodeCapacity((os.cpu_count() or 1) * 1000, memory)
