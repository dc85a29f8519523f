"""How many watches one client address may hold open at once (REST and gRPC each keep one
``WatchQuota``): past the cap a new watch is refused (HTTP 429 / gRPC RESOURCE_EXHAUSTED)
instead of every watch a client opens costing memory and a task."""

from __future__ import annotations

from knemu.errors import LocalError

MAX_WATCHES_PER_CLIENT = 100


class TooManyWatches(LocalError):
    """A client holds more open watches than allowed (HTTP 429)."""

    http_status = 429
    reason = "TooManyRequests"
    grpc_code = "RESOURCE_EXHAUSTED"


class WatchQuota:
    """Open watch streams per client address, at most ``per_client`` at once."""

    def __init__(self, per_client: int = MAX_WATCHES_PER_CLIENT) -> None:
        self.per_client = per_client
        self._open: dict[str, int] = {}

    def acquire(self, client: str) -> None:
        held = self._open.get(client, 0)
        if held >= self.per_client:
            raise TooManyWatches(
                f"{client} already has {held} open watches (the limit per client); close "
                "some, or watch several kinds' changes through fewer streams"
            )
        self._open[client] = held + 1

    def release(self, client: str) -> None:
        held = self._open.get(client, 0) - 1
        if held > 0:
            self._open[client] = held
        else:
            self._open.pop(client, None)

    def open_watches(self) -> int:
        return sum(self._open.values())
