"""Node Leases: each node's heartbeat published as ``kube-node-lease/<node>`` Lease objects.

Nodes renew their lease over gRPC every ``lease_renew_s``; the registry keeps those renewals
in memory so that a heartbeat costs no store write.  This controller mirrors them into
coordination.k8s.io Lease objects as the kubelet's lease controller keeps them
(https://kubernetes.io/docs/concepts/architecture/leases/#node-heart-beats): holder the node,
``leaseDurationSeconds`` the node grace period, ``renewTime`` the last renewal, owned by the
Node.  A Lease is rewritten when its renewTime is ``publish_every_s`` behind (at most 10 s,
the kubelet's own interval, and at most half the grace period), so watchers see the heartbeat
without a write per renewal; Leases that lag by half that period are written in the same
batch, so the api-server wakes a few times per period, not once per node.  Leases of nodes
that are gone are deleted.
"""

from __future__ import annotations

import datetime
import math

from knemu.apiserver.controllers.common import (
    Context,
    Obj,
    delete_quietly,
    name,
    namespace,
    owner_reference,
)
from knemu.apiserver.meta.naming import parse_rfc3339
from knemu.errors import AlreadyExists

NAMESPACE = "kube-node-lease"
KUBELET_RENEW_S = 10.0


def micro_time(now: float) -> str:
    """metav1.MicroTime as JSON: RFC 3339 with microseconds."""
    moment = datetime.datetime.fromtimestamp(now, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _published(lease: Obj | None) -> float:
    """The renewTime a Lease carries (0 for none)."""
    return parse_rfc3339(((lease or {}).get("spec") or {}).get("renewTime")) or 0.0


class NodeLeaseController:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        timings = ctx.config.timings
        self.publish_every_s = min(KUBELET_RENEW_S, timings.node_grace_s / 2)
        self._next: float | None = None

    def sync(self, now: float) -> None:
        store = self._ctx.store
        nodes = {name(n): n for n in self._ctx.list("Node")}
        leases = {}
        for lease in self._ctx.list("Lease"):
            if namespace(lease) != NAMESPACE:
                continue
            if name(lease) not in nodes:
                delete_quietly(store, lease, now)
            else:
                leases[name(lease)] = lease
        renewed = {n: self._ctx.registry.last_renew(n, now) for n in nodes}
        # When one Lease is due, every one that lags by half a period goes in the same batch.
        lag = self.publish_every_s
        if any(renewed[n] - _published(leases.get(n)) >= lag for n in nodes):
            lag /= 2
        due = [
            self._publish(node, leases.get(n), renewed[n], lag, now) for n, node in nodes.items()
        ]
        self._next = min(due) if due else None

    def next_deadline(self) -> float | None:
        return self._next

    def _publish(
        self, node: Obj, lease: Obj | None, renewed: float, lag: float, now: float
    ) -> float:
        """Write the node's Lease if it lags by ``lag``; returns when it next needs a look."""
        store = self._ctx.store
        node_name = name(node)
        spec = (lease or {}).get("spec") or {}
        published = _published(lease)
        if lease is not None and renewed - published < lag:
            # A node that stopped renewing is looked at again a period later, never "now".
            due = published + self.publish_every_s
            return due if due > now else now + self.publish_every_s
        desired = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": node_name, "namespace": NAMESPACE,
                         "ownerReferences": [owner_reference(node)]},
            "spec": {
                "holderIdentity": node_name,
                "leaseDurationSeconds": math.ceil(self._ctx.config.timings.node_grace_s),
                "acquireTime": spec.get("acquireTime") or micro_time(renewed),
                "renewTime": micro_time(renewed),
            },
        }  # fmt: skip
        if lease is None:
            try:
                store.create(desired, now, durable=False)
            except AlreadyExists:
                pass
        else:
            lease["spec"] = desired["spec"]
            store.update(lease, now, durable=False)  # a heartbeat mirror
        return max(renewed, now) + self.publish_every_s
