"""kube-proxy's service healthcheck answers (sans-I/O): what ``healthCheckNodePort`` says.

A LoadBalancer Service with ``externalTrafficPolicy: Local`` gets a ``healthCheckNodePort``
from the api-server; every node's kube-proxy serves HTTP on it so that the cloud load balancer
sends traffic only to nodes that have an endpoint of the service
(https://kubernetes.io/docs/tasks/access-application-cluster/create-external-load-balancer/
#preserving-the-client-source-ip).  kube-proxy's server (pkg/proxy/healthcheck,
service_health.go) answers any GET with a JSON body naming the service and its count of local
endpoints: 200 when there is at least one, 503 when there is none, with the count repeated in
``X-Load-Balancing-Endpoint-Weight``.  ``answer`` builds that reply; ``request_target`` parses
just enough of an HTTP/1.1 request head to tell a GET from anything else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

MAX_HEAD_BYTES = 8192  # a request head longer than this is refused (431), never buffered on


@dataclass(frozen=True)
class HealthAnswer:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def encode(self) -> bytes:
        """The whole HTTP/1.1 response; the connection is closed after it."""
        lines = [f"HTTP/1.1 {self.status} {self.reason}"]
        lines += [f"{k}: {v}" for k, v in self.headers]
        lines += [f"Content-Length: {len(self.body)}", "Connection: close", "", ""]
        return "\r\n".join(lines).encode("latin-1") + self.body


def answer(service_key: str, local_endpoints: int) -> HealthAnswer:
    """kube-proxy's reply for ``service_key`` ("namespace/name") on this node."""
    namespace, _, name = service_key.partition("/")
    body = {
        "service": {"namespace": namespace, "name": name},
        "localEndpoints": local_endpoints,
        "serviceProxyHealthy": True,
    }
    status, reason = (200, "OK") if local_endpoints > 0 else (503, "Service Unavailable")
    headers = (
        ("Content-Type", "application/json"),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Load-Balancing-Endpoint-Weight", str(local_endpoints)),
    )
    return HealthAnswer(status, reason, headers, json.dumps(body).encode())


def refusal(status: int, reason: str, detail: str) -> HealthAnswer:
    """A plain-text error for a request that is not a well-formed GET."""
    headers = (("Content-Type", "text/plain; charset=utf-8"),)
    return HealthAnswer(status, reason, headers, f"{detail}\n".encode())


def reply_to(head: bytes, service_key: str, local_endpoints: int) -> HealthAnswer:
    """The reply to one request head (the bytes up to and including the blank line)."""
    if len(head) > MAX_HEAD_BYTES:
        return refusal(431, "Request Header Fields Too Large", "request head too large")
    line = head.split(b"\r\n", 1)[0].split(b" ")
    if len(line) != 3 or not line[2].startswith(b"HTTP/1."):
        return refusal(400, "Bad Request", "not an HTTP/1.x request line")
    if line[0] != b"GET":
        return refusal(405, "Method Not Allowed", "the healthcheck answers GET only")
    return answer(service_key, local_endpoints)
