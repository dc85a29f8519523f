"""Service (load balancer) controller: gives LoadBalancer Services an ingress address.

On a cloud the service controller of cloud-controller-manager asks the provider for a load
balancer and writes its address to ``status.loadBalancer.ingress``
(https://kubernetes.io/docs/concepts/services-networking/service/#loadbalancer).  knemu has
no cloud; like MetalLB in layer-2 mode it hands out addresses from a pool, and node agents
treat them as virtual IPs of the Service, as kube-proxy does for load balancer IPs.

* The pool is the config's ``load_balancer_pool``, by default ``LOAD_BALANCER_POOL``
  (TEST-NET-1, RFC 5737: never routed on the Internet, so nothing leaves the emulated cluster
  by accident; seed 002's example uses 192.0.2.127).  The compose cluster uses a range of its
  node subnet instead, as MetalLB pools usually are: docker's internal networks drop packets
  for addresses outside their subnet.
* An address the Service already has (seed 002 writes one in its manifest) or asks for with
  the deprecated ``spec.loadBalancerIP`` is kept; otherwise the lowest free one is used.
* A Service that stops being a LoadBalancer loses its ingress.
Events follow cloud-controller-manager: EnsuringLoadBalancer, EnsuredLoadBalancer,
DeletedLoadBalancer, and SyncLoadBalancerFailed (Warning) when the pool is empty.
"""

from __future__ import annotations

import ipaddress

from knemu.apiserver.controllers.common import Context, Obj, name, namespace
from knemu.config import LOAD_BALANCER_POOL

__all__ = ["LOAD_BALANCER_POOL", "ServiceController", "ingress_ips"]
COMPONENT = "service-controller"


def ingress_ips(svc: Obj) -> list[str]:
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return [str(i["ip"]) for i in ingress if isinstance(i, dict) and i.get("ip")]


class ServiceController:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._reported: set[str] = set()  # Services told the pool is empty

    def sync(self, now: float) -> None:
        services = self._ctx.list("Service")
        used = {ip for svc in services for ip in ingress_ips(svc)}
        for svc in services:
            is_lb = (svc.get("spec") or {}).get("type") == "LoadBalancer"
            if is_lb and not ingress_ips(svc):
                self._ensure(svc, used, now)
            elif not is_lb and ingress_ips(svc):
                svc["status"]["loadBalancer"] = {}
                self._ctx.store.update(svc, now)
                self._event(svc, "Normal", "DeletedLoadBalancer", "Deleted load balancer", now)

    def _ensure(self, svc: Obj, used: set[str], now: float) -> None:
        ip = self._pick(svc, used)
        key = f"{namespace(svc)}/{name(svc)}"
        if ip is None:
            if key not in self._reported:
                self._reported.add(key)
                message = (
                    "Error syncing load balancer: no free address left in "
                    f"{self._ctx.config.load_balancer_pool}; "
                    "delete a LoadBalancer Service or use type NodePort"
                )
                self._event(svc, "Warning", "SyncLoadBalancerFailed", message, now)
            return
        self._reported.discard(key)
        used.add(ip)
        self._event(svc, "Normal", "EnsuringLoadBalancer", "Ensuring load balancer", now)
        svc.setdefault("status", {})["loadBalancer"] = {"ingress": [{"ip": ip, "ipMode": "VIP"}]}
        self._ctx.store.update(svc, now)
        self._event(svc, "Normal", "EnsuredLoadBalancer", "Ensured load balancer", now)

    def _pick(self, svc: Obj, used: set[str]) -> str | None:
        requested = (svc.get("spec") or {}).get("loadBalancerIP")
        if requested and requested not in used:
            return str(requested)
        for host in ipaddress.ip_network(self._ctx.config.load_balancer_pool).hosts():
            if str(host) not in used:
                return str(host)
        return None

    def _event(self, svc: Obj, etype: str, reason: str, message: str, now: float) -> None:
        self._ctx.recorder.record(svc, etype, reason, message, now, component=COMPONENT)
