"""The ingress controller's routing core: Ingress objects in, a decision per request out.

Theory of operation.  ``build`` turns the Ingresses this controller owns (their
``spec.ingressClassName`` names its IngressClass, or none is set and that class is the
default one) into a ``RoutingTable``, as ingress-nginx renders them into nginx ``server``
blocks: one host group per rule host (``""`` for rules without a host, which serve every host),
each with its paths; Ingresses are read oldest first, so when two claim the same host and path
the older one wins.  ``RoutingTable.route(host, path)`` picks the host group (the exact host,
then a ``*.`` wildcard that covers exactly one leading label, then the hostless group), then the
matching path with the most precedence (https://kubernetes.io/docs/concepts/services-networking/
ingress/#multiple-matches: the longest path; on a tie Exact before Prefix).  A request no path
matches goes to the default backend (the oldest owned Ingress's ``spec.defaultBackend``), or is
answered 404 as nginx's default server does.

Path types (https://kubernetes.io/docs/concepts/services-networking/ingress/#examples):
``Exact`` is the whole path, case-sensitive; ``Prefix`` compares ``/``-separated elements, so
``/foo`` matches ``/foo``, ``/foo/`` and ``/foo/bar`` but not ``/foobar`` (a trailing slash
in either is ignored); ``ImplementationSpecific`` is nginx's plain ``location /foo`` here: a
string prefix, which does match ``/foobar``.

``endpoints`` resolves a backend to addresses through its Service and EndpointSlices, as
ingress-nginx proxies to the pods directly rather than to the ClusterIP: the Service port by
number or name, then that port's number in each slice, ready endpoints only.  No Service, no
such port or no ready endpoint is a ``Unavailable`` (nginx answers 503).

Sans-I/O: plain dicts (the REST objects) in, dataclasses out; no sockets, no clock.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Obj = Mapping[str, Any]
Key = tuple[str, str]  # (namespace, name)
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
_TYPE_RANK = {"Exact": 0, "Prefix": 1, "ImplementationSpecific": 2}


@dataclass(frozen=True)
class Backend:
    namespace: str
    service: str
    port: int | str  # the Service port's number or name

    def __str__(self) -> str:
        return f"{self.namespace}/{self.service}:{self.port}"


@dataclass(frozen=True)
class PathRule:
    path: str
    path_type: str  # Exact | Prefix | ImplementationSpecific
    backend: Backend
    ingress: Key

    def matches(self, request_path: str) -> bool:
        return path_matches(self.path, self.path_type, request_path)


@dataclass(frozen=True)
class Route:
    """Where one request goes: a backend (and the rule that chose it), or nowhere (404)."""

    backend: Backend | None
    ingress: Key | None = None
    rule: str = ""  # "host path (type)" for logs and the X-Knemu-Ingress-Rule header


@dataclass(frozen=True)
class Unavailable:
    """A backend with nothing to send to (nginx: 503 Service Temporarily Unavailable)."""

    reason: str


@dataclass
class RoutingTable:
    hosts: dict[str, list[PathRule]] = field(default_factory=dict)
    default: Backend | None = None
    tls: list[tuple[tuple[str, ...], Key]] = field(default_factory=list)  # hosts, secret

    def route(self, host: str, path: str) -> Route:
        name = normalize_host(host)
        group = self.hosts.get(name)
        if group is None:
            group = self.hosts.get(_wildcard_of(name)) if _wildcard_of(name) else None
        if group is None:
            group = self.hosts.get("")
        for rule in group or ():
            if rule.matches(path):
                shown = f"{name or '*'} {rule.path or '/'} ({rule.path_type})"
                return Route(rule.backend, rule.ingress, shown)
        return Route(self.default, None, "default backend" if self.default else "")

    def secret_for(self, server_name: str | None) -> Key | None:
        """The TLS Secret for an SNI name: the exact host, then a wildcard entry; with no
        match (or no SNI) the first one, as nginx serves its default certificate."""
        name = normalize_host(server_name or "")
        wildcard = _wildcard_of(name)
        for candidates in ((name,), (wildcard,)):
            for hosts, secret in self.tls:
                if any(c and c in hosts for c in candidates):
                    return secret
        return self.tls[0][1] if self.tls else None

    def secrets(self) -> set[Key]:
        return {secret for _, secret in self.tls}


def normalize_host(host: str) -> str:
    """The Host header's name: no port, no trailing dot, lower case (RFC 9110 section 7.2)."""
    name = host.strip().lower()
    if name.startswith("["):  # an IPv6 literal: never an Ingress host
        return name.split("]", 1)[0] + "]"
    return name.rsplit(":", 1)[0].rstrip(".") if ":" in name else name.rstrip(".")


def _wildcard_of(name: str) -> str:
    """``foo.bar.com`` -> ``*.bar.com`` (a wildcard covers exactly one label)."""
    head, dot, rest = name.partition(".")
    return f"*.{rest}" if dot and head and rest else ""


def path_matches(rule_path: str, path_type: str, request_path: str) -> bool:
    if path_type == "Exact":
        return request_path == rule_path
    if path_type == "Prefix":
        want = [e for e in rule_path.split("/") if e]
        got = [e for e in request_path.split("/") if e]
        return got[: len(want)] == want
    return request_path.startswith(rule_path or "/")  # ImplementationSpecific: nginx location


def owns(ingress: Obj, class_name: str, is_default_class: bool) -> bool:
    """Whether this controller serves ``ingress`` (its class, or none and ours is default)."""
    wanted = (ingress.get("spec") or {}).get("ingressClassName")
    if wanted is None:  # the deprecated annotation is honoured as ingress-nginx does
        wanted = ((ingress.get("metadata") or {}).get("annotations") or {}).get(
            "kubernetes.io/ingress.class"
        )
    return wanted == class_name if wanted else is_default_class


def class_is_default(ingress_class: Obj | None) -> bool:
    annotations = ((ingress_class or {}).get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(DEFAULT_CLASS_ANNOTATION, "")).lower() == "true"


def build(ingresses: Iterable[Obj], class_name: str, is_default_class: bool) -> RoutingTable:
    table = RoutingTable()
    owned = sorted(
        (i for i in ingresses if owns(i, class_name, is_default_class)),
        key=lambda i: (i["metadata"].get("creationTimestamp", ""), _key(i)),
    )
    for ing in owned:
        ns, spec = _key(ing)[0], ing.get("spec") or {}
        if table.default is None and spec.get("defaultBackend"):
            table.default = _backend(ns, spec["defaultBackend"])
        for rule in spec.get("rules") or []:
            group = table.hosts.setdefault(normalize_host(rule.get("host") or ""), [])
            for entry in (rule.get("http") or {}).get("paths") or []:
                backend = _backend(ns, entry.get("backend") or {})
                if backend is None:
                    continue  # a resource backend: not something this controller proxies to
                kind = entry.get("pathType") or "ImplementationSpecific"
                group.append(PathRule(entry.get("path") or "", kind, backend, _key(ing)))
        for tls in spec.get("tls") or []:
            if tls.get("secretName"):
                hosts = tuple(normalize_host(h) for h in tls.get("hosts") or [])
                table.tls.append((hosts, (ns, tls["secretName"])))
    for group in table.hosts.values():
        # Stable: among equals the older Ingress (read first) keeps precedence.
        group.sort(key=lambda r: (-len(r.path), _TYPE_RANK.get(r.path_type, 3)))
    return table


def _key(obj: Obj) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _backend(namespace: str, spec: Obj) -> Backend | None:
    service = spec.get("service")
    if not service:
        return None
    port = service.get("port") or {}
    number_or_name: int | str = port.get("number") or str(port.get("name") or "")
    return Backend(namespace, str(service.get("name")), number_or_name)


def endpoints(
    backend: Backend, services: Mapping[Key, Obj], slices: Iterable[Obj]
) -> list[tuple[str, int]] | Unavailable:
    """The ready (address, port) pairs behind ``backend``."""
    svc = services.get((backend.namespace, backend.service))
    if svc is None:
        return Unavailable(f"service {backend.namespace}/{backend.service} not found")
    ports = (svc.get("spec") or {}).get("ports") or []
    match = [p for p in ports if backend.port in (p.get("port"), p.get("name"))]
    if not match:
        return Unavailable(f"service {backend} has no such port")
    port_name = match[0].get("name") or ""
    found: list[tuple[str, int]] = []
    for s in slices:
        meta = s.get("metadata") or {}
        labels = meta.get("labels") or {}
        if meta.get("namespace") != backend.namespace:
            continue
        if labels.get(SERVICE_NAME_LABEL) != backend.service:
            continue
        numbers = [
            p.get("port") for p in s.get("ports") or [] if (p.get("name") or "") == port_name
        ]
        if not numbers or not numbers[0]:
            continue
        for ep in s.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False or not ep.get("addresses"):
                continue
            found.append((str(ep["addresses"][0]), int(numbers[0])))
    if not found:
        return Unavailable(f"no ready endpoints for service {backend.namespace}/{backend.service}")
    return sorted(found)


def tls_pair(secret: Obj) -> tuple[bytes, bytes] | None:
    """(certificate chain PEM, key PEM) of a kubernetes.io/tls Secret, or None."""
    data = secret.get("data") or {}
    try:
        return base64.b64decode(data["tls.crt"]), base64.b64decode(data["tls.key"])
    except (KeyError, ValueError, TypeError):
        return None


def forwarded_headers(
    incoming: Mapping[str, str], peer: str, scheme: str, host: str, port: int
) -> dict[str, str]:
    """What ingress-nginx adds for the backend (its proxy_set_header defaults):
    X-Forwarded-For appended with the peer (RFC 7239's de facto predecessor), X-Real-IP,
    X-Forwarded-Host, -Port and -Proto, and X-Request-ID passed on or left to the caller."""
    previous = incoming.get("X-Forwarded-For", "")
    return {
        "X-Forwarded-For": f"{previous}, {peer}" if previous else peer,
        "X-Real-IP": peer,
        "X-Forwarded-Host": host,
        "X-Forwarded-Port": str(port),
        "X-Forwarded-Proto": scheme,
        "X-Forwarded-Scheme": scheme,
    }


def load_balancer_status(publish_service: Obj | None) -> list[dict[str, str]]:
    """status.loadBalancer.ingress for owned Ingresses: the published Service's addresses (as
    ingress-nginx's --publish-service does)."""
    lb = ((publish_service or {}).get("status") or {}).get("loadBalancer") or {}
    out = []
    for entry in lb.get("ingress") or []:
        kept = {k: str(entry[k]) for k in ("ip", "hostname") if entry.get(k)}
        if kept:
            out.append(kept)
    return out
