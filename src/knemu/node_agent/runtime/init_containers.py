"""Init containers: run in order, each to success, before the app containers start
(https://kubernetes.io/docs/concepts/workloads/pods/init-containers/).

An init container that fails is restarted (with the usual back-off) unless the pod's
restartPolicy is Never, in which case the pod fails.  While they run the pod is Pending and
its app containers wait with reason ``PodInitializing``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

from knemu.node_agent.runtime.containers import ContainerStatus


class InitRunner(Protocol):
    def start(self) -> None: ...
    async def wait_done(self) -> None: ...
    def status(self) -> ContainerStatus: ...


def init_restart_policy(pod_policy: str) -> str:
    """An init container restarts on failure unless the pod's policy is Never."""
    return "Never" if pod_policy == "Never" else "OnFailure"


async def run_in_order(runners: Sequence[InitRunner]) -> bool:
    """Start each after the one before succeeded; False when one failed for good."""
    for runner in runners:
        runner.start()
        await runner.wait_done()
        status = runner.status()
        if status.state != "terminated" or status.exit_code != 0:
            return False
    return True


def init_phase(statuses: Sequence[ContainerStatus], pod_policy: str) -> str | None:
    """The pod phase while init containers decide it (None: they all succeeded)."""
    for s in statuses:
        if s.state == "terminated" and s.exit_code == 0:
            continue
        if s.state == "terminated" and pod_policy == "Never":
            return "Failed"
        return "Pending"
    return None


def as_init(status: ContainerStatus) -> ContainerStatus:
    return replace(status, init=True)
