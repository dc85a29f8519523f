"""One pod's ConfigMaps and Secrets on the node, and a way to wait for them to change.

The kubelet retries a container that is waiting with CreateContainerConfigError on every pod
sync; here the waiting containers retry when the objects they name change (``next_change``),
which is when a retry can first succeed.
"""

from __future__ import annotations

import asyncio

from knemu.node_agent.runtime.config_sources import Sources, sources_version


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
