"""The ServiceAccount controller: every active namespace has a ServiceAccount ``default``
(kube-controller-manager's serviceaccount-controller; recreated when deleted, as upstream)."""

from __future__ import annotations

from knemu.apiserver.controllers.common import Context, is_terminating, name
from knemu.apiserver.meta.naming import rfc3339
from knemu.errors import AlreadyExists

DEFAULT = "default"


class ServiceAccountController:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def sync(self, now: float) -> None:
        store = self._ctx.store
        for ns in self._ctx.list("Namespace"):
            if is_terminating(ns) or store.get("ServiceAccount", name(ns), DEFAULT) is not None:
                continue
            account = {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": DEFAULT, "namespace": name(ns),
                             "creationTimestamp": rfc3339(now)},
            }  # fmt: skip
            try:
                store.create(account, now)
            except AlreadyExists:
                pass  # created by a request between our get and create
