"""Event recorder (dedup, aggregation) and the built-in objects."""

from __future__ import annotations

from knemu.apiserver import builtins
from knemu.apiserver.recorder import EventRecorder
from knemu.apiserver.storage.store import Store

from .cluster import T0, Cluster


def test_repeats_bump_count_and_last_timestamp(cluster: Cluster) -> None:
    rec = EventRecorder(cluster.store)
    pod = {"kind": "Pod", "metadata": {"name": "p", "namespace": "default", "uid": "u1"}}
    rec.record(pod, "Warning", "BackOff", "Back-off restarting", T0)
    rec.record(pod, "Warning", "BackOff", "Back-off restarting", T0 + 61)
    rec.record(pod, "Warning", "BackOff", "something else", T0 + 62)
    events = sorted(cluster.events("BackOff"), key=lambda e: e["message"])
    assert [(e["message"], e["count"]) for e in events] == [
        ("Back-off restarting", 2),
        ("something else", 1),
    ]
    first = events[0]
    assert first["firstTimestamp"] == "2023-11-14T22:13:20Z"
    assert first["lastTimestamp"] == "2023-11-14T22:14:21Z"
    assert first["metadata"]["name"].startswith("p.")
    assert first["involvedObject"] == {
        "kind": "Pod",
        "namespace": "default",
        "name": "p",
        "uid": "u1",
        "apiVersion": "v1",
    }


def test_node_events_live_in_default(cluster: Cluster) -> None:
    rec = EventRecorder(cluster.store)
    rec.record({"kind": "Node", "metadata": {"name": "node-7"}}, "Normal", "Test", "hello", T0)
    (event,) = cluster.events("Test")
    assert event["metadata"]["namespace"] == "default"
    assert "namespace" not in event["involvedObject"]


def test_similar_events_are_aggregated(cluster: Cluster) -> None:
    rec = EventRecorder(cluster.store)
    pod = {"kind": "Pod", "metadata": {"name": "p", "namespace": "default", "uid": "u1"}}
    for i in range(15):
        rec.record(pod, "Warning", "Flood", f"message {i}", T0 + i)
    events = cluster.events("Flood")
    combined = [e for e in events if e["message"].startswith("(combined from similar events)")]
    assert len(events) == 11 and len(combined) == 1
    assert combined[0]["count"] == 5 and combined[0]["message"].endswith("message 14")


def test_bootstrap_objects(cluster: Cluster) -> None:
    names = {n["metadata"]["name"] for n in cluster.store.list("Namespace")}
    assert names == {"default", "kube-system", "kube-public", "kube-node-lease"}
    k8s = cluster.store.get("Service", "default", "kubernetes")
    assert k8s is not None and k8s["spec"]["clusterIP"] == "10.96.0.1"
    assert k8s["spec"]["ports"] == [
        {"name": "https", "protocol": "TCP", "port": 443, "targetPort": 6443}
    ]
    dns = cluster.store.get("Service", "kube-system", "kube-dns")
    assert dns is not None and dns["spec"]["clusterIP"] == "10.96.0.10"
    assert dns["metadata"]["labels"]["k8s-app"] == "kube-dns"
    ports = {(p["name"], p["port"], p["protocol"]) for p in dns["spec"]["ports"]}
    assert ports == {("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")}


def test_bootstrap_is_idempotent_across_restarts(tmp_path: object) -> None:
    path = f"{tmp_path}/store.db"
    from knemu.apiserver.admission.pipeline import Admission
    from knemu.config import ApiServerConfig

    store = Store(path)
    builtins.bootstrap(store, Admission(store, ApiServerConfig()), T0)
    rv = store.resource_version
    store.close()
    store = Store(path)
    try:
        builtins.bootstrap(store, Admission(store, ApiServerConfig()), T0 + 100)
        assert store.resource_version == rv
        assert store.get("Service", "kube-system", "kube-dns")["spec"]["clusterIP"] == "10.96.0.10"  # type: ignore[index]
    finally:
        store.close()


def test_events_expire_after_an_hour(cluster: Cluster) -> None:
    rec = EventRecorder(cluster.store)
    pod = {"kind": "Pod", "metadata": {"name": "p", "namespace": "default", "uid": "u1"}}
    rec.record(pod, "Normal", "Old", "old news", T0)
    rec.record(pod, "Normal", "Fresh", "new", T0 + 3000)
    assert rec.prune(T0 + 3599) == 0
    assert rec.prune(T0 + 3600) == 1
    assert {e["reason"] for e in cluster.events()} == {"Fresh"}
    # a repeat after expiry starts a new Event object with count 1
    rec.record(pod, "Normal", "Old", "old news", T0 + 3700)
    (again,) = cluster.events("Old")
    assert again["count"] == 1
