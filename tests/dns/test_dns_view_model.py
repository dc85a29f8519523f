"""Model-based: any sequence of watch events leaves the view exactly as a fresh list would.

The incremental indexes (per-service records, the PTR index, namespace counts, pod IPs) are
compared with a view built from scratch out of the objects still alive at the end, which is
what the view would hold after a relist.
"""

from __future__ import annotations

from typing import Any

from dns_cluster import endpoint, endpoint_slice, pod, service
from hypothesis import example, given, seed, settings, strategies as st

from knemu.dns.view import ClusterView

# A small universe, so that random events often touch the same objects.
NAMESPACES = ["a", "b"]
SERVICES = ["s1", "s2"]
IPS = ["10.244.1.2", "fd00::5"]
CLUSTER_IPS = ["10.96.0.11", "None", "None"]


@st.composite
def objects(draw: st.DrawFn) -> tuple[str, Any]:
    ns = draw(st.sampled_from(NAMESPACES))
    kind = draw(st.sampled_from(["Service", "EndpointSlice", "Pod"]))
    if kind == "Service":
        name = draw(st.sampled_from(SERVICES))
        return kind, service(ns, name, draw(st.sampled_from(CLUSTER_IPS)), [("p", "TCP", 80)],
                             publish_not_ready=draw(st.booleans()))  # fmt: skip
    if kind == "EndpointSlice":
        eps = [
            endpoint(ip, ready=draw(st.booleans()), hostname=draw(st.sampled_from(["", "h"])))
            for ip in draw(st.lists(st.sampled_from(IPS), max_size=3))
        ]
        name = draw(st.sampled_from(["e1", "e2"]))
        return kind, endpoint_slice(ns, name, draw(st.sampled_from(SERVICES)), eps)
    name = draw(st.sampled_from(["p1", "p2"]))
    hostname = draw(st.sampled_from(["", "x"]))
    subdomain = draw(st.sampled_from(["", *SERVICES]))
    return kind, pod(ns, name, draw(st.sampled_from(IPS)), hostname=hostname, subdomain=subdomain)


def _snapshot(view: ClusterView) -> dict[str, Any]:
    records = {
        (r.namespace, r.name): (r.kind, r.cluster_ips, r.members, dict(r.hosts))
        for r in view.services()
    }
    ptr = {ip: view.names_for_ip(ip) for ip in [*IPS, CLUSTER_IPS[0]]}
    namespaces = {ns: view.namespace_exists(ns) for ns in NAMESPACES}
    pods = {(ns, ip): view.has_pod_ip(ns, ip) for ns in NAMESPACES for ip in IPS}
    return {"records": records, "ptr": ptr, "ns": namespaces, "pods": pods}


# A pod naming a headless service comes last: its hostname must still reach the service.
POD_LAST = [
    (False, ("Service", service("a", "s1", "None", [("p", "TCP", 80)]))),
    (False, ("EndpointSlice", endpoint_slice("a", "e1", "s1", [endpoint("10.244.1.2")]))),
    (False, ("Pod", pod("a", "p1", "10.244.1.2", hostname="x", subdomain="s1"))),
]


@seed(7)
@settings(max_examples=400, deadline=None)
@example(POD_LAST)
@given(st.lists(st.tuples(st.booleans(), objects()), min_size=4, max_size=30))
def test_incremental_equals_fresh(events: list[tuple[bool, tuple[str, Any]]]) -> None:
    view = ClusterView()
    alive: dict[tuple[str, str, str], Any] = {}
    for delete, (kind, obj) in events:
        key = (kind, obj.metadata.namespace, obj.metadata.name)
        if delete:
            view.apply("DELETED", kind, obj)
            alive.pop(key, None)
        else:
            view.apply("MODIFIED" if key in alive else "ADDED", kind, obj)
            alive[key] = obj
    fresh = ClusterView()
    for (kind, _ns, _name), obj in sorted(alive.items(), key=lambda item: item[0]):
        fresh.apply("ADDED", kind, obj)
    assert _snapshot(view) == _snapshot(fresh)
    assert view.statistics()["services"] == fresh.statistics()["services"]
