"""Store: create/update/delete semantics, resourceVersion, durability across restart and SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from knemu.apiserver.storage.store import Store, StoredEvent, rfc3339
from knemu.errors import AlreadyExists, Conflict, Gone, Invalid, NotFound

NOW = 1_700_000_000.0
SRC = str(Path(__file__).resolve().parents[3] / "src")


def pod(name: str, ns: str = "default", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "x"}},
        "spec": {"containers": [{"name": "c", "image": "nginx"}], **spec},
    }


def test_create_sets_identity_fields() -> None:
    store = Store(":memory:")
    out = store.create(pod("a"), NOW)
    meta = out["metadata"]
    assert meta["resourceVersion"] == "1"
    assert meta["generation"] == 1
    assert meta["creationTimestamp"] == rfc3339(NOW) == "2023-11-14T22:13:20Z"
    assert len(meta["uid"]) == 36
    assert store.resource_version == 1
    assert store.get("Pod", "default", "a") == out


def test_get_returns_copies() -> None:
    store = Store(":memory:")
    store.create(pod("a"), NOW)
    got = store.get("Pod", "default", "a")
    assert got is not None
    got["metadata"]["labels"]["app"] = "changed"
    again = store.get("Pod", "default", "a")
    assert again is not None and again["metadata"]["labels"]["app"] == "x"


def test_create_duplicate_is_already_exists() -> None:
    store = Store(":memory:")
    store.create(pod("a"), NOW)
    with pytest.raises(AlreadyExists, match='Pod "a" already exists'):
        store.create(pod("a"), NOW)
    store.create(pod("a", ns="other"), NOW)  # same name, another namespace
    assert [p["metadata"]["namespace"] for p in store.list("Pod")] == ["default", "other"]
    assert len(store.list("Pod", "other")) == 1


def test_generate_name_and_missing_name() -> None:
    store = Store(":memory:")
    obj = pod("")
    obj["metadata"]["generateName"] = "web-"
    out = store.create(obj, NOW)
    assert out["metadata"]["name"].startswith("web-") and len(out["metadata"]["name"]) == 9
    with pytest.raises(Invalid, match=r"metadata\.name"):
        store.create(pod(""), NOW)


def test_cluster_scoped_kinds_have_no_namespace() -> None:
    store = Store(":memory:")
    node = {"kind": "Node", "metadata": {"name": "node-1", "namespace": "junk"}}
    out = store.create(node, NOW)
    assert "namespace" not in out["metadata"]
    assert store.get("Node", "whatever", "node-1") is not None
    assert store.list("Node", "")[0]["metadata"]["name"] == "node-1"


def test_update_generation_and_conflict() -> None:
    store = Store(":memory:")
    created = store.create(pod("a"), NOW)
    created["status"] = {"phase": "Running"}
    s1 = store.update(created, NOW + 1)
    assert s1["metadata"]["generation"] == 1  # status only: generation unchanged
    assert s1["metadata"]["uid"] == created["metadata"]["uid"]
    assert s1["metadata"]["resourceVersion"] == "2"
    s1["spec"]["restartPolicy"] = "Never"
    s2 = store.update(s1, NOW + 2)
    assert s2["metadata"]["generation"] == 2
    stale = dict(s1, metadata=dict(s1["metadata"], resourceVersion="2"))
    with pytest.raises(Conflict, match=r'Pod "a".*latest is 3'):
        store.update(stale, NOW)
    unconditional = dict(s2, metadata=dict(s2["metadata"], resourceVersion=""))
    unconditional["metadata"]["labels"] = {"app": "y"}
    assert store.update(unconditional, NOW)["metadata"]["resourceVersion"] == "4"


def test_update_keeps_uid_and_creation_timestamp() -> None:
    store = Store(":memory:")
    created = store.create(pod("a"), NOW)
    forged = pod("a")
    forged["metadata"].update(uid="forged", creationTimestamp="1999-01-01T00:00:00Z")
    forged["spec"]["hostname"] = "h"
    out = store.update(forged, NOW + 5)
    assert out["metadata"]["uid"] == created["metadata"]["uid"]
    assert out["metadata"]["creationTimestamp"] == created["metadata"]["creationTimestamp"]


def test_noop_update_writes_nothing() -> None:
    store = Store(":memory:")
    events: list[StoredEvent] = []
    store.add_listener(events.append)
    created = store.create(pod("a"), NOW)
    same = store.update(created, NOW + 1)
    assert same["metadata"]["resourceVersion"] == "1"
    assert store.resource_version == 1
    assert [e.type for e in events] == ["ADDED"]


def test_update_and_delete_missing_are_not_found() -> None:
    store = Store(":memory:")
    with pytest.raises(NotFound, match='Pod "a" not found in namespace'):
        store.update(pod("a"), NOW)
    with pytest.raises(NotFound):
        store.delete("Pod", "default", "a", NOW)


def test_delete_returns_last_state_with_new_rv() -> None:
    store = Store(":memory:")
    events: list[StoredEvent] = []
    store.add_listener(events.append)
    store.create(pod("a"), NOW)
    gone = store.delete("Pod", "default", "a", NOW)
    assert gone["metadata"]["resourceVersion"] == "2"
    assert store.get("Pod", "default", "a") is None
    assert [(e.rv, e.type, e.kind) for e in events] == [(1, "ADDED", "Pod"), (2, "DELETED", "Pod")]
    assert events[1].obj["metadata"]["resourceVersion"] == "2"


def test_events_since_and_compaction() -> None:
    store = Store(":memory:", event_history=5)
    for i in range(12):
        store.create(pod(f"p{i}"), NOW)
    assert [e.rv for e in store.events_since(7)] == [8, 9, 10, 11, 12]
    assert store.events_since(12) == []
    with pytest.raises(Gone, match="too old"):
        store.events_since(6)
    with pytest.raises(Gone, match="newer than"):
        store.events_since(13)


def test_listener_failure_does_not_break_writes() -> None:
    store = Store(":memory:")

    def broken(event: StoredEvent) -> None:
        raise RuntimeError("boom")

    seen: list[int] = []
    store.add_listener(broken)
    store.add_listener(lambda e: seen.append(e.rv))
    store.create(pod("a"), NOW)
    assert seen == [1]


def test_restart_keeps_objects_rv_and_history(tmp_path: Path) -> None:
    path = str(tmp_path / "knemu.db")
    store = Store(path, event_history=3)
    for i in range(4):
        store.create(pod(f"p{i}"), NOW)
    store.delete("Pod", "default", "p0", NOW)
    store.close()
    reopened = Store(path, event_history=3)
    assert reopened.resource_version == 5
    assert [p["metadata"]["name"] for p in reopened.list("Pod")] == ["p1", "p2", "p3"]
    assert [e.rv for e in reopened.events_since(2)] == [3, 4, 5]
    with pytest.raises(Gone):
        reopened.events_since(1)
    assert reopened.create(pod("p9"), NOW)["metadata"]["resourceVersion"] == "6"
    reopened.close()


_WRITER = textwrap.dedent(
    """
    import sys
    from knemu.apiserver.storage.store import Store
    store = Store(sys.argv[1], sync_each_write=sys.argv[2] == "each")
    for i in range(100000):
        obj = {"kind": "ConfigMap", "metadata": {"name": f"o{i}", "namespace": "d"}}
        store.create(obj, 0.0, durable=i % 3 != 0)  # lazily durable ones survive SIGKILL too
        print(i, flush=True)   # acknowledged: the write has returned
    """
)


@pytest.mark.parametrize("sync", ["each", "group"])
def test_sigkill_loses_no_acknowledged_write(tmp_path: Path, sync: str) -> None:
    path = str(tmp_path / "knemu.db")
    env = dict(os.environ, PYTHONPATH=SRC)
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, path, sync], stdout=subprocess.PIPE, text=True, env=env
    )
    acked = -1
    try:
        assert child.stdout is not None
        deadline = time.monotonic() + 60
        while acked < 200 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            acked = int(line)
        os.kill(child.pid, signal.SIGKILL)
        # Lines written before the kill were acknowledged too; read them all.
        for line in child.stdout:
            acked = max(acked, int(line))
    finally:
        child.kill()
        child.wait()
    assert acked >= 200, "the writer did not get going"
    store = Store(path)
    names = {o["metadata"]["name"] for o in store.list("ConfigMap")}
    assert {f"o{i}" for i in range(acked + 1)} <= names
    assert store.resource_version >= acked + 1
    store.close()


def test_lazily_durable_writes_skip_the_fsync_and_durable_ones_restore_it(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "knemu.db"))

    def synchronous() -> (
        int
    ):  # 1 NORMAL, 2 FULL (https://sqlite.org/pragma.html#pragma_synchronous)
        return int(store._db.execute("PRAGMA synchronous").fetchone()[0])

    assert synchronous() == 2
    lease = {"kind": "Lease", "metadata": {"name": "node-1", "namespace": "kube-node-lease"}}
    store.create(lease, NOW, durable=False)
    assert synchronous() == 1
    store.create(pod("p"), NOW)
    assert synchronous() == 2
    store.close()
    reopened = Store(str(tmp_path / "knemu.db"))
    assert reopened.get("Lease", "kube-node-lease", "node-1") is not None
    reopened.close()


def test_group_commit_store_fsyncs_only_on_flush(tmp_path: Path) -> None:
    """sync_each_write=False (the api-server's store): no fsync per write; flush() makes
    everything committed durable, from any thread."""
    import threading

    store = Store(str(tmp_path / "knemu.db"), sync_each_write=False)
    store.flush()  # nothing written yet: nothing to do
    store.create(pod("p"), NOW)
    assert int(store._db.execute("PRAGMA synchronous").fetchone()[0]) == 1  # NORMAL
    worker = threading.Thread(target=store.flush)
    worker.start()
    worker.join()
    store.close()
    reopened = Store(str(tmp_path / "knemu.db"))
    assert reopened.get("Pod", "default", "p") is not None
    reopened.close()
