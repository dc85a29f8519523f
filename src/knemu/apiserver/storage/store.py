"""The object store: Kubernetes-shaped JSON objects in SQLite with a global resourceVersion.

Theory of operation
-------------------
This plays etcd's role for the api-server (Kubernetes "API concepts: resource versions",
https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions):

* Every write (create, update, delete) takes the next value of one global, monotonic counter,
  the resourceVersion (rv).  The counter lives in the database, so it keeps growing across
  restarts and a watcher can resume from any rv it has seen.
* Each write appends one row to an event log (rv, type, object).  Watchers resume with
  ``events_since(rv)``; the log keeps the last ``event_history`` events and anything older is
  compacted, after which resuming from before that point raises ``Gone`` (HTTP 410 Expired),
  exactly as a compacted etcd does.
* Writes are one SQLite transaction each, in WAL mode with ``synchronous=FULL``: when a call
  returns, the write is on disk and survives a SIGKILL or power loss (https://sqlite.org/wal.html).
  Writes made with ``durable=False`` (heartbeat mirrors, Events: rewritten soon anyway) skip
  the fsync (``synchronous=NORMAL``): they survive a SIGKILL at once and a power loss as soon
  as any later durable write commits, since its fsync of the WAL covers the frames before it.
  An fsync per heartbeat was the api-server's largest cost with 50 idle nodes.
* ``sync_each_write=False`` (the api-server's choice) makes every write like that and leaves
  the fsync to ``flush()``, which the server calls from a worker thread every 100 ms (group
  commit, as etcd batches its fsyncs): a write survives a SIGKILL at once and a power loss
  within ~100 ms.  An fsync per write on the event loop made a rollout of 100 pods on a busy
  disk answer node heartbeats seconds late, and nodes were declared dead for it.
* Reads are served from an in-memory copy of every object's JSON text, loaded at open, so a
  ``list`` costs no disk I/O; every read returns a fresh dict the caller may mutate.
* Updates that change nothing are not written and do not bump the rv (Kubernetes skips no-op
  updates the same way), so controllers that rewrite the same status converge instead of
  looping.

The store is synchronous and has no notion of time of its own: ``now`` (seconds since the
epoch) is passed in.  Listeners are called synchronously after each commit, in rv order; the
event object they receive is shared and must be treated as read-only.
"""

from __future__ import annotations

import builtins
import datetime
import json
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from knemu.errors import AlreadyExists, Conflict, FieldError, Gone, Invalid, NotFound

log = logging.getLogger(__name__)

CLUSTER_SCOPED_KINDS = frozenset(
    {"Namespace", "Node", "IngressClass", "ClusterRole", "ClusterRoleBinding"}
)
# metadata.generateName suffix alphabet, as Kubernetes' utilrand.String (no vowels, no 0/1/3).
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_GENERATE_ATTEMPTS = 16

Obj = dict[str, Any]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    rv INTEGER NOT NULL, json TEXT NOT NULL,
    PRIMARY KEY (kind, namespace, name));
CREATE TABLE IF NOT EXISTS events (
    rv INTEGER PRIMARY KEY, type TEXT NOT NULL, kind TEXT NOT NULL,
    namespace TEXT NOT NULL, name TEXT NOT NULL, json TEXT NOT NULL);
"""


@dataclass(frozen=True)
class StoredEvent:
    """One committed change.  ``obj`` is the object after it (DELETED: its last state)."""

    rv: int
    type: str  # "ADDED" | "MODIFIED" | "DELETED"
    kind: str
    obj: Obj


def rfc3339(now: float) -> str:
    """Seconds since the epoch as Kubernetes writes timestamps (RFC 3339, UTC, seconds)."""
    moment = datetime.datetime.fromtimestamp(now, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def object_key(obj: Obj) -> tuple[str, str, str]:
    """(kind, namespace, name) of an object; cluster-scoped kinds use namespace ""."""
    kind = obj.get("kind")
    meta = obj.get("metadata")
    if not isinstance(kind, str) or not kind:
        raise Invalid("object", "", [FieldError("kind", "required: set the object's kind")])
    if not isinstance(meta, dict):
        raise Invalid(kind, "", [FieldError("metadata", "required: set metadata.name")])
    name = meta.get("name") or ""
    if kind in CLUSTER_SCOPED_KINDS:
        return kind, "", str(name)
    return kind, str(meta.get("namespace") or "default"), str(name)


def _dumps(obj: Obj) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


class Store:
    """SQLite-backed object store; one per process (see the module docstring)."""

    def __init__(
        self, path: str, event_history: int = 100_000, sync_each_write: bool = True
    ) -> None:
        if event_history < 1:
            raise ValueError("event_history must be >= 1")
        self._path = path
        self._history = event_history
        self._sync_each_write = sync_each_write
        self._wal_fd: int | None = None  # flush() fsyncs the write-ahead log through it
        self._lock = threading.RLock()
        self._listeners: list[Callable[[StoredEvent], None]] = []
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._durable = True  # the synchronous setting in force (see _write)
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise OSError(
                f"cannot open the object store {path!r}: {exc}; "
                "check the data directory exists and is writable"
            ) from exc
        self._rv = self._meta("rv")
        self._compacted = self._meta("compacted")
        self._cache: dict[str, dict[tuple[str, str], str]] = {}
        self._kind_rv: dict[str, int] = {}  # kind -> rv of its latest write (this process)
        for kind, ns, name, text in self._db.execute(
            "SELECT kind, namespace, name, json FROM objects"
        ):
            self._cache.setdefault(kind, {})[(ns, name)] = text

    # ---- reads -----------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        """The latest resourceVersion handed out (0 for an empty, new store)."""
        return self._rv

    def kind_version(self, kind: str) -> int:
        """The resourceVersion of the latest write to ``kind`` since this store opened (0:
        none): a reader that memoises one kind's list need not drop it when others change."""
        return self._kind_rv.get(kind, 0)

    @property
    def path(self) -> str:
        return self._path

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        ns = "" if kind in CLUSTER_SCOPED_KINDS else namespace
        text = self._cache.get(kind, {}).get((ns, name))
        return None if text is None else dict(json.loads(text))

    def list(self, kind: str, namespace: str | None = None) -> builtins.list[Obj]:
        """Objects of ``kind`` (in ``namespace``; None = all), ordered by namespace and name."""
        items = self._cache.get(kind, {})
        keys = sorted(k for k in items if namespace is None or k[0] == namespace)
        return [json.loads(items[k]) for k in keys]

    def list_texts(self, kind: str) -> builtins.list[str]:
        """The stored JSON text of every object of ``kind`` (namespace, name order): a
        consistent snapshot that costs one reference per object until each is decoded."""
        items = self._cache.get(kind, {})
        return [items[k] for k in sorted(items)]

    def event_page(self, after_rv: int, until_rv: int, limit: int) -> builtins.list[StoredEvent]:
        """At most ``limit`` events with ``after_rv < rv <= until_rv``, oldest first (a page
        of ``events_since``, so a long backlog is read a page at a time); Gone as there."""
        if after_rv < self._compacted:
            raise Gone(
                f"resourceVersion {after_rv} is too old: events up to {self._compacted} were "
                "compacted; list again and watch from the list's resourceVersion"
            )
        rows = self._db.execute(
            "SELECT rv, type, kind, json FROM events WHERE rv > ? AND rv <= ? ORDER BY rv LIMIT ?",
            (after_rv, until_rv, limit),
        ).fetchall()
        return [StoredEvent(r, t, k, json.loads(text)) for r, t, k, text in rows]

    def kinds(self) -> builtins.list[str]:
        return sorted(kind for kind, items in self._cache.items() if items)

    def events_since(self, rv: int) -> builtins.list[StoredEvent]:
        """Every event with resourceVersion > ``rv``, oldest first.

        Raises Gone when events after ``rv`` were compacted away, or when ``rv`` is newer than
        anything this store handed out (its data was reset): either way the caller must list
        again, as a Kubernetes client does on 410 Expired.
        """
        if rv < self._compacted:
            raise Gone(
                f"resourceVersion {rv} is too old: events up to {self._compacted} were "
                f"compacted (history keeps {self._history}); list again and watch from the "
                "list's resourceVersion"
            )
        if rv > self._rv:
            raise Gone(
                f"resourceVersion {rv} is newer than the store's latest {self._rv} (was the "
                "api-server's data directory reset?); list again"
            )
        rows = self._db.execute(
            "SELECT rv, type, kind, json FROM events WHERE rv > ? ORDER BY rv", (rv,)
        ).fetchall()
        return [StoredEvent(r, t, k, json.loads(text)) for r, t, k, text in rows]

    # ---- writes ----------------------------------------------------------------------------

    def create(self, obj: Obj, now: float, durable: bool = True) -> Obj:
        """Store a new object: uid, resourceVersion, creationTimestamp, generation 1."""
        with self._lock:
            new = json.loads(_dumps(obj))
            kind, ns, name = object_key(new)
            meta = new["metadata"]
            if not name:
                name = self._generate_name(kind, ns, meta)
            if self._cache.get(kind, {}).get((ns, name)) is not None:
                where = f" in namespace {ns!r}" if ns else ""
                raise AlreadyExists(
                    f'{kind} "{name}" already exists{where}: delete it first, or replace/patch '
                    "it instead of creating it"
                )
            meta["name"] = name
            if kind not in CLUSTER_SCOPED_KINDS:
                meta["namespace"] = ns
            else:
                meta.pop("namespace", None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = rfc3339(now)
            meta["generation"] = 1
            return self._write("ADDED", kind, ns, name, new, durable)

    def update(self, obj: Obj, now: float, durable: bool = True) -> Obj:
        """Replace an object.  uid and creationTimestamp are kept from the stored one."""
        with self._lock:
            new = json.loads(_dumps(obj))
            kind, ns, name = object_key(new)
            old = self.get(kind, ns, name)
            if old is None:
                raise NotFound(self._missing(kind, ns, name, "create it first"))
            meta, old_meta = new["metadata"], old["metadata"]
            given = meta.get("resourceVersion")
            if given not in (None, "") and str(given) != old_meta["resourceVersion"]:
                raise Conflict(
                    f'Operation cannot be fulfilled on {kind} "{name}": the object has been '
                    f"modified (you sent resourceVersion {given}, the latest is "
                    f"{old_meta['resourceVersion']}); read it again and apply your change to "
                    "the latest version"
                )
            for key in ("uid", "creationTimestamp", "resourceVersion"):
                meta[key] = old_meta.get(key)
            if kind not in CLUSTER_SCOPED_KINDS:
                meta["namespace"] = ns
            else:
                meta.pop("namespace", None)
            # metadata.generation counts changes of the desired state (spec) only, so a
            # controller's status.observedGeneration can tell whether it saw the latest spec
            # (https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/object-meta/).
            generation = int(old_meta.get("generation") or 1)
            if new.get("spec") != old.get("spec"):
                generation += 1
            meta["generation"] = generation
            if new == old:
                return old  # no-op update: nothing written, rv unchanged
            return self._write("MODIFIED", kind, ns, name, new, durable)

    def delete(self, kind: str, namespace: str, name: str, now: float) -> Obj:
        """Remove an object at once; returns its last state carrying the deletion's rv."""
        with self._lock:
            ns = "" if kind in CLUSTER_SCOPED_KINDS else namespace
            old = self.get(kind, ns, name)
            if old is None:
                raise NotFound(self._missing(kind, ns, name, "nothing to delete"))
            return self._write("DELETED", kind, ns, name, old)

    def add_listener(self, cb: Callable[[StoredEvent], None]) -> None:
        """Call ``cb`` synchronously after every committed write, in rv order."""
        self._listeners.append(cb)

    def remove_listener(self, cb: Callable[[StoredEvent], None]) -> None:
        if cb in self._listeners:
            self._listeners.remove(cb)

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._wal_fd is not None:
                os.close(self._wal_fd)
                self._wal_fd = None

    def flush(self) -> None:
        """Make every committed write durable (fsync the write-ahead log).  Safe to call from
        another thread: it touches only the file, never the connection."""
        if self._wal_fd is None:
            try:
                self._wal_fd = os.open(self._path + "-wal", os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return  # nothing written yet
        os.fsync(self._wal_fd)

    # ---- internals -------------------------------------------------------------------------

    def _write(
        self, etype: str, kind: str, ns: str, name: str, obj: Obj, durable: bool = True
    ) -> Obj:
        rv = self._rv + 1
        obj["metadata"]["resourceVersion"] = str(rv)
        text = _dumps(obj)
        horizon = rv - self._history  # events with rv <= horizon are compacted
        db = self._db
        durable = durable and self._sync_each_write
        if durable != self._durable:
            db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._durable = durable
        db.execute("BEGIN IMMEDIATE")
        try:
            if etype == "DELETED":
                db.execute(
                    "DELETE FROM objects WHERE kind=? AND namespace=? AND name=?", (kind, ns, name)
                )
            else:
                db.execute(
                    "INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?)",
                    (kind, ns, name, rv, text),
                )
            db.execute(
                "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", (rv, etype, kind, ns, name, text)
            )
            db.execute("INSERT OR REPLACE INTO meta VALUES ('rv', ?)", (rv,))
            if horizon > self._compacted:
                db.execute("DELETE FROM events WHERE rv <= ?", (horizon,))
                db.execute("INSERT OR REPLACE INTO meta VALUES ('compacted', ?)", (horizon,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._rv = rv
        self._kind_rv[kind] = rv
        self._compacted = max(self._compacted, horizon)
        items = self._cache.setdefault(kind, {})
        if etype == "DELETED":
            items.pop((ns, name), None)
        else:
            items[(ns, name)] = text
        self._notify(StoredEvent(rv, etype, kind, json.loads(text)))
        return dict(json.loads(text))

    def _notify(self, event: StoredEvent) -> None:
        for cb in list(self._listeners):
            try:
                cb(event)
            except Exception:  # a broken listener must not undo or block a committed write
                log.exception("store listener %r failed on %s rv=%d", cb, event.type, event.rv)

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _generate_name(self, kind: str, ns: str, meta: Obj) -> str:
        # metadata.generateName: prefix + 5 random characters, retried on collision
        # (https://kubernetes.io/docs/reference/using-api/api-concepts/#generated-values).
        prefix = meta.get("generateName")
        if not isinstance(prefix, str) or not prefix:
            cause = FieldError("metadata.name", "required: set metadata.name or generateName")
            raise Invalid(kind, "", [cause])
        items = self._cache.get(kind, {})
        for _ in range(_GENERATE_ATTEMPTS):
            seed = uuid.uuid4().int
            suffix = "".join(_NAME_ALPHABET[(seed >> (8 * i)) % 27] for i in range(5))
            if (ns, prefix + suffix) not in items:
                return prefix + suffix
        raise AlreadyExists(f"{kind}: no free name for generateName {prefix!r}; use another")

    @staticmethod
    def _missing(kind: str, ns: str, name: str, hint: str) -> str:
        where = f" in namespace {ns!r}" if ns else ""
        return f'{kind} "{name}" not found{where}: {hint}'
