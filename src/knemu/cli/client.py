"""REST client for the knemu api-server, and the table of resource kinds the CLI knows.

The api-server speaks the Kubernetes REST conventions (API Concepts,
https://kubernetes.io/docs/reference/using-api/api-concepts/): collections at
``/api/v1/namespaces/{ns}/{plural}`` (core group) or ``/apis/{group}/{version}/...``, a
``Status`` object on failure, ``?dryRun=All`` to validate without persisting, ``?watch=true``
for a newline-delimited stream of ``{"type": ..., "object": ...}``.  The client is synchronous
(urllib): each CLI command is a handful of requests, and a plain blocking call keeps ``main()``
usable from any caller, including tests running inside an event loop.

Credentials come from the kubeconfig, as kubectl finds it (``$KUBECONFIG``'s first file, else
``~/.kube/config``; its current context): the cluster CA, a client certificate or a bearer
token.  ``--server`` / ``$KNEMU_SERVER`` replace only the URL, as ``kubectl --server`` does.
"""

from __future__ import annotations

import json
import logging
import math
import os
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from knemu.errors import ConfigError, KnemuError, LocalError, RemoteError, Unavailable
from knemu.pki import Credentials, from_kubeconfig

log = logging.getLogger(__name__)

DEFAULT_SERVER = "https://127.0.0.1:6443"
SERVER_ENV = "KNEMU_SERVER"
WATCH_CHUNK_S = 60.0  # an open-ended wait re-reads the object at least this often

Obj = dict[str, Any]


@dataclass(frozen=True)
class ResourceType:
    """One kind the CLI can address, with the names kubectl accepts for it."""

    kind: str
    group_version: str  # "v1", "apps/v1", ...
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()

    @property
    def group(self) -> str:
        return self.group_version.rpartition("/")[0]

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def qualified(self) -> str:
        """``deployment.apps``: how kubectl names the kind in ``TYPE/NAME`` output."""
        return f"{self.singular}.{self.group}" if self.group else self.singular

    def names(self) -> tuple[str, ...]:
        base = (self.singular, self.plural, *self.short_names)
        if self.group:
            base += tuple(f"{n}.{self.group}" for n in (self.singular, self.plural))
        return base

    def collection_path(self, namespace: str | None) -> str:
        prefix = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        if self.namespaced and namespace:
            return f"{prefix}/namespaces/{_q(namespace)}/{self.plural}"
        return f"{prefix}/{self.plural}"

    def object_path(self, namespace: str | None, name: str) -> str:
        return f"{self.collection_path(namespace)}/{_q(name)}"


_RBAC = "rbac.authorization.k8s.io/v1"
# The kinds of docs/INTERFACES.md "Kinds and keys", with kubectl's short names
# (`kubectl api-resources`).
RESOURCE_TYPES: tuple[ResourceType, ...] = (
    ResourceType("Pod", "v1", "pods", True, ("po",)),
    ResourceType("Service", "v1", "services", True, ("svc",)),
    ResourceType("Endpoints", "v1", "endpoints", True, ("ep",)),
    ResourceType("Namespace", "v1", "namespaces", False, ("ns",)),
    ResourceType("Node", "v1", "nodes", False, ("no",)),
    ResourceType("Event", "v1", "events", True, ("ev",)),
    ResourceType("ConfigMap", "v1", "configmaps", True, ("cm",)),
    ResourceType("Secret", "v1", "secrets", True),
    ResourceType("Deployment", "apps/v1", "deployments", True, ("deploy",)),
    ResourceType("ReplicaSet", "apps/v1", "replicasets", True, ("rs",)),
    ResourceType("DaemonSet", "apps/v1", "daemonsets", True, ("ds",)),
    ResourceType("EndpointSlice", "discovery.k8s.io/v1", "endpointslices", True),
    ResourceType("NetworkPolicy", "networking.k8s.io/v1", "networkpolicies", True, ("netpol",)),
    ResourceType("Ingress", "networking.k8s.io/v1", "ingresses", True, ("ing",)),
    ResourceType("IngressClass", "networking.k8s.io/v1", "ingressclasses", False),
    ResourceType("ServiceAccount", "v1", "serviceaccounts", True, ("sa",)),
    ResourceType("Role", _RBAC, "roles", True),
    ResourceType("RoleBinding", _RBAC, "rolebindings", True),
    ResourceType("ClusterRole", _RBAC, "clusterroles", False),
    ResourceType("ClusterRoleBinding", _RBAC, "clusterrolebindings", False),
)

_BY_NAME: dict[str, ResourceType] = {n: rt for rt in RESOURCE_TYPES for n in rt.names()}
_BY_KIND: dict[str, ResourceType] = {rt.kind: rt for rt in RESOURCE_TYPES}


class UnknownKind(LocalError):
    """The user named a kind the CLI does not know."""


def _known_kinds() -> str:
    return ", ".join(
        rt.plural + (f" ({', '.join(rt.short_names)})" if rt.short_names else "")
        for rt in RESOURCE_TYPES
    )


def resolve_kind(name: str) -> ResourceType:
    """Resource type for a kubectl-style name: ``po``, ``pods``, ``Pod``, ``deployments.apps``."""
    rt = _BY_NAME.get(name.lower()) or _BY_KIND.get(name)
    if rt is None:
        raise UnknownKind(
            f'the server doesn\'t have a resource type "{name}"; known kinds: {_known_kinds()}'
        )
    return rt


def resource_for(api_version: str, kind: str) -> ResourceType:
    """Resource type of a manifest's apiVersion/kind; UnknownKind names what is supported."""
    rt = _BY_KIND.get(kind)
    if rt is None or rt.group_version != api_version:
        supported = ", ".join(f"{r.group_version} {r.kind}" for r in RESOURCE_TYPES)
        raise UnknownKind(
            f'no kind "{kind}" is registered for version "{api_version}"; supported: {supported}'
        )
    return rt


def _selectors(label_selector: str, field_selector: str) -> dict[str, str]:
    query = {}
    if label_selector:
        query["labelSelector"] = label_selector
    if field_selector:
        query["fieldSelector"] = field_selector
    return query


def _q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


@dataclass
class StatusError(KnemuError):
    """The api-server refused a request with a Kubernetes ``Status`` (shown like kubectl)."""

    code: int
    status_reason: str
    status_message: str
    causes: list[Obj] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(f"Error from server ({self.status_reason}): {self.status_message}")

    @classmethod
    def from_body(cls, code: int, body: bytes) -> StatusError:
        try:
            status = json.loads(body)
        except ValueError:
            status = None
        if not isinstance(status, dict) or "message" not in status:
            text = body.decode("utf-8", "replace").strip() or f"HTTP {code}"
            return cls(code, REASONS.get(code, "Unknown"), text)
        details = status.get("details") or {}
        return cls(
            code,
            str(status.get("reason") or REASONS.get(code, "Unknown")),
            str(status["message"]),
            list(details.get("causes") or []),
        )

    @property
    def not_found(self) -> bool:
        return self.code == 404


# Reasons Kubernetes attaches to bare HTTP codes (k8s.io/apimachinery errors.go).
REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}


PATCH_TYPES = {  # kubectl patch --type -> Content-Type
    "strategic": "application/strategic-merge-patch+json",
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
}


def kubeconfig_path() -> Path:
    """Where kubectl looks first: the first file of $KUBECONFIG, else ~/.kube/config."""
    env = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    return Path(env[0]) if env else Path.home() / ".kube" / "config"


def load_credentials(server: str | None, path: Path | None = None) -> Credentials:
    """The kubeconfig's current-context credentials, for ``server`` when one is given (else
    the kubeconfig's server, else DEFAULT_SERVER).  No kubeconfig: no credentials."""
    path = path or kubeconfig_path()
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        config = {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"kubeconfig {path} cannot be read ({exc}); fix it or set "
                          "KUBECONFIG") from None  # fmt: skip
    found = from_kubeconfig(config, path.parent) if isinstance(config, dict) else None
    creds = found or Credentials(DEFAULT_SERVER)
    url = server or creds.server or DEFAULT_SERVER
    if "://" not in url:
        url = "https://" + url
    return creds.with_server(url.rstrip("/"))


class ApiClient:
    """Blocking JSON client for the api-server's REST API, presenting ``credentials`` (the
    kubeconfig's, by default)."""

    def __init__(
        self,
        server: str | None = None,
        timeout_s: float = 30.0,
        credentials: Credentials | None = None,
    ) -> None:
        if credentials is None:
            credentials = load_credentials(server)
        elif server:
            credentials = credentials.with_server(server.rstrip("/"))
        self.credentials = credentials
        self.server = credentials.server
        self.timeout_s = timeout_s
        self._ssl = credentials.ssl_context()

    def ssl_context(self) -> ssl.SSLContext | None:
        """TLS for other clients of the same server (aiohttp websockets)."""
        return self._ssl

    def auth_headers(self) -> dict[str, str]:
        return self.credentials.headers()

    def session_options(self) -> dict[str, Any]:
        """``aiohttp.ClientSession`` arguments presenting these credentials (websockets and
        streams); call inside the event loop that will use the session."""
        import aiohttp  # lazily: most commands need only urllib

        ssl_arg: ssl.SSLContext | bool = self._ssl if self._ssl is not None else True
        return {"headers": self.auth_headers(), "connector": aiohttp.TCPConnector(ssl=ssl_arg)}

    # -- raw requests ------------------------------------------------------------------------

    def _open(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        streaming: bool = False,
        content_type: str = "application/json",
    ) -> Any:
        url = self.server + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        log.debug("%s %s", method, url)
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        for key, value in self.credentials.headers().items():
            req.add_header(key, value)
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            # A stream (watch, followed logs) may stay quiet for as long as it likes.
            timeout = None if streaming else self.timeout_s
            return urllib.request.urlopen(req, timeout=timeout, context=self._ssl)
        except urllib.error.HTTPError as exc:
            raise StatusError.from_body(exc.code, exc.read()) from None
        except (TimeoutError, urllib.error.URLError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise Unavailable(
                    f"the api-server at {self.server} is not the one the kubeconfig's CA "
                    f"vouches for ({reason.verify_message}); use the kubeconfig `knemu up` "
                    "wrote (or `knemu kubeconfig`)"
                ) from None
            raise Unavailable(
                f"cannot reach the api-server at {self.server}: {reason} "
                "(is it running? knemu up / docker compose up)"
            ) from None

    def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Obj:
        with self._open(method, path, query, body, content_type=content_type) as resp:
            raw = resp.read()
        if not raw:
            return {}
        try:
            decoded = json.loads(raw)
        except ValueError:
            raise Unavailable(f"api-server at {self.server} sent non-JSON for {path}") from None
        return decoded if isinstance(decoded, dict) else {"value": decoded}

    def read(self, path: str) -> bytes:
        """The raw body of a GET (a proxied health check, a log)."""
        with self._open("GET", path) as resp:
            body: bytes = resp.read()
        return body

    # -- typed helpers -----------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        return self.request("GET", rt.object_path(namespace, name))

    def find(self, rt: ResourceType, namespace: str | None, name: str) -> Obj | None:
        try:
            return self.get(rt, namespace, name)
        except StatusError as exc:
            if exc.not_found:
                return None
            raise

    def list(
        self,
        rt: ResourceType,
        namespace: str | None,
        label_selector: str = "",
        field_selector: str = "",
    ) -> Obj:
        query = _selectors(label_selector, field_selector)
        return self.request("GET", rt.collection_path(namespace), query)

    def create(
        self, rt: ResourceType, namespace: str | None, obj: Obj, dry_run: bool = False
    ) -> Obj:
        query = {"dryRun": "All"} if dry_run else None
        return self.request("POST", rt.collection_path(namespace), query, obj)

    def replace(
        self, rt: ResourceType, namespace: str | None, obj: Obj, dry_run: bool = False
    ) -> Obj:
        query = {"dryRun": "All"} if dry_run else None
        name = obj["metadata"]["name"]
        return self.request("PUT", rt.object_path(namespace, name), query, obj)

    def patch(
        self, rt: ResourceType, namespace: str | None, name: str, body: Any, patch_type: str
    ) -> Obj:
        """PATCH with ``patch_type`` strategic, merge or json (kubectl patch --type)."""
        ctype = PATCH_TYPES[patch_type]
        return self.request("PATCH", rt.object_path(namespace, name), None, body, ctype)

    def delete(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        return self.request("DELETE", rt.object_path(namespace, name))

    def stream(self, path: str, query: Mapping[str, str]) -> Iterator[bytes]:
        """Lines of a streaming response (watch events, followed logs) as they arrive."""
        resp = self._open("GET", path, query, streaming=True)
        with resp:
            while True:
                line = resp.readline()
                if not line:
                    return
                yield line

    def watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        resource_version: str,
        label_selector: str = "",
        field_selector: str = "",
        timeout_s: int | None = None,
    ) -> Iterator[Obj]:
        """Watch events after resource_version; ends when the server ends the stream."""
        query = {"watch": "true", "resourceVersion": resource_version}
        query.update(_selectors(label_selector, field_selector))
        if timeout_s is not None:
            query["timeoutSeconds"] = str(timeout_s)
        for line in self.stream(rt.collection_path(namespace), query):
            if line.strip():
                event = json.loads(line)
                if isinstance(event, dict):
                    yield event

    def pod_log_path(self, namespace: str, pod: str) -> str:
        return f"/api/v1/namespaces/{_q(namespace)}/pods/{_q(pod)}/log"

    def wait_for(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        done: Callable[[Obj], bool],
        timeout_s: float | None,
    ) -> Obj | None:
        """The object once ``done(obj)`` holds, by watching it; None after timeout_s (None:
        wait forever).  Raises RemoteError if the object is deleted meanwhile."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        selector = f"metadata.name={name}"
        while True:
            obj = self.get(rt, namespace, name)
            if done(obj):
                return obj
            remaining = WATCH_CHUNK_S if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return None
            rv = str(obj["metadata"].get("resourceVersion", "0"))
            chunk_s = max(1, math.ceil(min(remaining, WATCH_CHUNK_S)))
            for event in self.watch(rt, namespace, rv, field_selector=selector, timeout_s=chunk_s):
                changed = event.get("object")
                if event.get("type") == "DELETED":
                    raise RemoteError(f'{rt.plural} "{name}" was deleted while waiting for it')
                if isinstance(changed, dict) and event.get("type") != "ERROR" and done(changed):
                    return changed
