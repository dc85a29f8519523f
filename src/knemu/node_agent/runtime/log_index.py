"""When each stretch of a container's log file was first seen: the runtime records the file's
growth (``containers.py:Runner``) and the kubelet's ``/containerLogs`` (``kubelet/logs.py``)
reads a line's time from it for ``timestamps``, ``sinceSeconds`` and ``sinceTime``.  Pure:
sizes and ``now`` in."""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field

INDEX_ENTRIES = 100_000  # growth records kept per container (older bytes: the oldest's time)


@dataclass
class LogIndex:
    """When each stretch of a log file was first seen: (start offset, wall time) entries."""

    entries: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=INDEX_ENTRIES))
    size: int = 0

    def observe(self, size: int, now: float) -> None:
        if size > self.size:
            self.entries.append((self.size, now))
        self.size = size

    def time_of(self, offset: int) -> float | None:
        """When the byte at ``offset`` was first seen (None: not yet)."""
        starts = [start for start, _ in self.entries]
        i = bisect.bisect_right(starts, offset) - 1
        if i >= 0:
            return self.entries[i][1]
        return self.entries[0][1] if self.entries else None
