"""Sans-I/O core of the watch client: the link state machine and the informer's cache.

Theory of operation
-------------------
A watcher (node agent, DNS) holds one Watch stream to the api-server at a time.  The link
moves through four states, driven by what happens to that stream; the table below is the
whole machine (as h11's ``_state.py`` writes its own), and any other (state, input) pair is a
protocol violation by the server:

    DISCONNECTED --DIAL--> CONNECTING --object event--> SYNCING --SYNCED--> SYNCED
          ^                     |  \\__________________SYNCED_______________^   |
          +------ RELIST / BROKEN (from CONNECTING, SYNCING or SYNCED) ---------+

The cache mirrors the Kubernetes client-go informer ("reflector": list, then watch from the
list's resourceVersion; https://kubernetes.io/docs/reference/using-api/api-concepts/
#efficient-detection-of-changes):

* Resuming (``since_rv > 0``): the backlog and live events are applied one by one in
  resourceVersion order; anything at or below the last applied rv is a duplicate and skipped.
* Listing (``since_rv == 0``, first start or after RELIST): the snapshot is collected without
  touching the cache, and at SYNCED it is diffed against the cache, so handlers see DELETED
  for objects that vanished while we were away and MODIFIED only for objects that changed,
  exactly what client-go's Replace() delivers.

Nothing here does I/O or reads a clock; ``knemu.proto.client`` feeds it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from knemu.errors import RemoteError
from knemu.proto import knemu_pb2 as pb

# pb.Object's oneof field -> canonical kind name (docs/INTERFACES.md "Kinds and keys").
KIND_OF_FIELD = {
    "node": "Node",
    "pod": "Pod",
    "service": "Service",
    "endpoint_slice": "EndpointSlice",
    "network_policy": "NetworkPolicy",
    "namespace": "Namespace",
}
WATCHABLE_KINDS = frozenset(KIND_OF_FIELD.values())

Key = tuple[str, str, str]  # (kind, namespace, name); cluster-scoped kinds use namespace ""


class WatchProtocolError(RemoteError):
    """The api-server sent something the Watch contract does not allow."""


class LinkState(enum.Enum):
    DISCONNECTED = "DISCONNECTED"
    CONNECTING = "CONNECTING"
    SYNCING = "SYNCING"
    SYNCED = "SYNCED"


class LinkInput(enum.Enum):
    DIAL = "DIAL"  # a Watch call is being opened
    OBJECT_EVENT = "OBJECT_EVENT"  # ADDED / MODIFIED / DELETED received
    SYNCED_MARK = "SYNCED_MARK"  # SYNCED received
    RELIST = "RELIST"  # RELIST received: the server ends the stream
    BROKEN = "BROKEN"  # the stream failed or ended


_S, _I = LinkState, LinkInput
TRANSITIONS: dict[tuple[LinkState, LinkInput], LinkState] = {
    (_S.DISCONNECTED, _I.DIAL): _S.CONNECTING,
    (_S.CONNECTING, _I.OBJECT_EVENT): _S.SYNCING,
    (_S.CONNECTING, _I.SYNCED_MARK): _S.SYNCED,  # empty snapshot or backlog
    (_S.CONNECTING, _I.RELIST): _S.DISCONNECTED,
    (_S.CONNECTING, _I.BROKEN): _S.DISCONNECTED,
    (_S.SYNCING, _I.OBJECT_EVENT): _S.SYNCING,
    (_S.SYNCING, _I.SYNCED_MARK): _S.SYNCED,
    (_S.SYNCING, _I.RELIST): _S.DISCONNECTED,
    (_S.SYNCING, _I.BROKEN): _S.DISCONNECTED,
    (_S.SYNCED, _I.OBJECT_EVENT): _S.SYNCED,
    (_S.SYNCED, _I.RELIST): _S.DISCONNECTED,
    (_S.SYNCED, _I.BROKEN): _S.DISCONNECTED,
}


def next_state(state: LinkState, event: LinkInput) -> LinkState:
    """The link's next state; a pair missing from TRANSITIONS is a protocol violation."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise WatchProtocolError(
            f"watch link: input {event.value} is not valid in state {state.value} "
            "(the api-server broke the Watch contract); the stream is dropped and reopened"
        ) from None


_INPUT_OF_TYPE = {
    pb.WatchEvent.ADDED: LinkInput.OBJECT_EVENT,
    pb.WatchEvent.MODIFIED: LinkInput.OBJECT_EVENT,
    pb.WatchEvent.DELETED: LinkInput.OBJECT_EVENT,
    pb.WatchEvent.SYNCED: LinkInput.SYNCED_MARK,
    pb.WatchEvent.RELIST: LinkInput.RELIST,
}


def input_of(event: pb.WatchEvent) -> LinkInput:
    try:
        return _INPUT_OF_TYPE[event.type]
    except KeyError:
        raise WatchProtocolError(
            f"watch event of unknown type {event.type} at rv {event.resource_version}; "
            "upgrade the client to match the api-server"
        ) from None


def unwrap(obj: pb.Object) -> tuple[str, Any]:
    """pb.Object -> (kind, typed message); raises WatchProtocolError if it holds nothing."""
    field = obj.WhichOneof("kind")
    if field is None:
        raise WatchProtocolError("watch event without an object; the api-server is broken")
    return KIND_OF_FIELD[field], getattr(obj, field)


def key_of(kind: str, message: Any) -> Key:
    return (kind, message.metadata.namespace, message.metadata.name)


@dataclass(frozen=True)
class Change:
    """One change handed to on_event: type is ADDED | MODIFIED | DELETED."""

    type: str
    kind: str
    obj: Any  # pb.Node | pb.Pod | pb.Service | pb.EndpointSlice | pb.NetworkPolicy | pb.Namespace
    old: Any | None


class WatchCache:
    """The informer's cache and its reducer: feed WatchEvents, get Changes back."""

    def __init__(self) -> None:
        self.objects: dict[Key, Any] = {}
        self.last_rv = 0
        self._snapshot: dict[Key, tuple[str, Any]] | None = None

    def begin(self, since_rv: int) -> None:
        """A new stream starts: since_rv == 0 is a list (collected until SYNCED)."""
        self._snapshot = {} if since_rv == 0 else None

    def apply(self, event: pb.WatchEvent) -> list[Change]:
        if event.type == pb.WatchEvent.SYNCED:
            changes = self._finish_snapshot() if self._snapshot is not None else []
            self._snapshot = None
            self.last_rv = max(self.last_rv, event.resource_version)
            return changes
        if event.type == pb.WatchEvent.RELIST:
            self._snapshot = None
            return []
        kind, message = unwrap(event.object)
        key = key_of(kind, message)
        if self._snapshot is not None:
            if event.type == pb.WatchEvent.DELETED:
                self._snapshot.pop(key, None)
            else:
                self._snapshot[key] = (kind, message)
            return []
        if event.resource_version <= self.last_rv:
            return []  # already applied: a resumed stream never repeats, but guard anyway
        self.last_rv = event.resource_version
        return [self._apply_one(event.type, kind, key, message)]

    def _apply_one(self, etype: int, kind: str, key: Key, message: Any) -> Change:
        old = self.objects.get(key)
        if etype == pb.WatchEvent.DELETED:
            self.objects.pop(key, None)
            return Change("DELETED", kind, message, old)
        self.objects[key] = message
        # What the handler needs is whether it knew the object: a MODIFIED for an object it
        # never saw is an ADDED to it, and an ADDED over a known one is a MODIFIED.
        return Change("ADDED" if old is None else "MODIFIED", kind, message, old)

    def _finish_snapshot(self) -> list[Change]:
        assert self._snapshot is not None
        snapshot = self._snapshot
        changes = [
            Change("DELETED", key[0], old, old)
            for key, old in sorted(self.objects.items(), key=_by_key)
            if key not in snapshot
        ]
        for key, (kind, message) in snapshot.items():
            old = self.objects.get(key)
            if old is None:
                changes.append(Change("ADDED", kind, message, None))
            elif old != message:
                changes.append(Change("MODIFIED", kind, message, old))
        self.objects = {key: message for key, (_, message) in snapshot.items()}
        return changes

    def list(self, kind: str) -> list[Any]:
        return [m for k, m in sorted(self.objects.items(), key=_by_key) if k[0] == kind]


def _by_key(item: tuple[Key, Any]) -> Key:
    return item[0]
