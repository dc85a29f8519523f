"""CPU and memory of pods and of the node, from /proc: the kubelet's Summary API figures.

A container's usage is that of its process tree: the process the agent started for it and
every descendant (runc and the container's own processes, a built-in workload).  The node's
is the agent's own tree, which holds every pod.  Per process, ``/proc/<pid>/stat`` gives
utime+stime (and cutime+cstime of reaped children) in clock ticks, ``/proc/<pid>/status``
VmRSS; memory reported is the sum of RSS ("working set" here: pages shared between
processes are counted in each, so it errs high).  ``usageNanoCores`` is the rate between two
samples, as cAdvisor computes it (https://kubernetes.io/docs/reference/instrumentation/
node-metrics/); ``Sampler`` keeps the previous sample per tree.

Pure: the text of the /proc files and ``now`` in, figures out; ``kubelet/stats.py`` reads
the files.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    cpu_ticks: int  # utime + stime + cutime + cstime
    rss_bytes: int


@dataclass(frozen=True)
class Usage:
    cpu_ns: int  # cumulative CPU time of the tree (usageCoreNanoSeconds)
    nano_cores: int  # CPU rate since the previous sample (usageNanoCores)
    memory_bytes: int  # workingSetBytes
    window_s: float  # since the previous sample (0: none)


def parse_stat(text: str) -> tuple[int, int, int] | None:
    """(pid, ppid, utime+stime+cutime+cstime) from /proc/<pid>/stat (proc(5)); None when
    the text is not one (the process went away mid-read)."""
    try:
        pid_part, _, rest = text.partition(" (")
        fields = rest.rsplit(") ", 1)[1].split()  # the name may hold spaces and parentheses
        # fields[0] is field 3 (state); ppid is field 4, utime..cstime fields 14-17
        return int(pid_part), int(fields[1]), sum(int(f) for f in fields[11:15])
    except (IndexError, ValueError):
        return None


def parse_rss(text: str) -> int:
    """VmRSS of /proc/<pid>/status in bytes (0 for kernel threads and zombies)."""
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            parts = line.split()
            return int(parts[1]) * 1024 if len(parts) > 1 and parts[1].isdigit() else 0
    return 0


def tree(root: int, procs: Mapping[int, Proc]) -> list[Proc]:
    """``root`` and all its descendants that exist in ``procs``."""
    children: dict[int, list[int]] = {}
    for proc in procs.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    found, todo = [], [root]
    seen: set[int] = set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in procs:
            continue
        seen.add(pid)
        found.append(procs[pid])
        todo += children.get(pid, [])
    return found


@dataclass
class Sampler:
    """Turns cumulative CPU time into a rate between samples, per named tree."""

    ticks_per_s: int = 100
    _previous: dict[str, tuple[float, int]] = field(default_factory=dict)

    def has_recent(self, names: Iterable[str], now: float, max_age_s: float) -> bool:
        return all(n in self._previous and now - self._previous[n][0] <= max_age_s for n in names)

    def usage(self, name: str, procs: list[Proc], now: float) -> Usage:
        cpu_ns = sum(p.cpu_ticks for p in procs) * NS_PER_S // self.ticks_per_s
        memory = sum(p.rss_bytes for p in procs)
        before = self._previous.get(name)
        self._previous[name] = (now, cpu_ns)
        rate, window = 0, 0.0
        if before is not None and now > before[0] and cpu_ns >= before[1]:
            window = now - before[0]
            rate = int((cpu_ns - before[1]) / window)
        return Usage(cpu_ns, rate, memory, window)

    def forget_except(self, names: Iterable[str]) -> None:
        keep = set(names)
        for name in list(self._previous):
            if name not in keep:
                del self._previous[name]
