"""One exception hierarchy for knemu.

Every error says what went wrong and what to do about it, and knows how it is reported at each
boundary: an HTTP status and Kubernetes ``Status`` reason for REST, a gRPC status code, a DNS
rcode, and a CLI exit code.  Local errors (the caller's input is wrong) are distinguished from
remote ones (a peer or server failed), as h11 does with LocalProtocolError/RemoteProtocolError.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class KnemuError(Exception):
    """Base of every error knemu raises on purpose."""

    http_status = 500
    reason = "InternalError"  # Kubernetes metav1.StatusReason
    grpc_code = "INTERNAL"  # name of a grpc.StatusCode member
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class LocalError(KnemuError):
    """The request or input is wrong; retrying it unchanged will fail again."""

    http_status = 400
    reason = "BadRequest"
    grpc_code = "INVALID_ARGUMENT"
    exit_code = 1


class RemoteError(KnemuError):
    """A server or peer failed or could not be reached; retrying later may work."""

    http_status = 503
    reason = "ServiceUnavailable"
    grpc_code = "UNAVAILABLE"
    exit_code = 1


@dataclass(frozen=True)
class FieldError:
    """One invalid field, as Kubernetes reports it in Status.details.causes."""

    field: str  # field path, e.g. spec.ports[0].port
    message: str
    type: str = "FieldValueInvalid"

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass
class Invalid(LocalError):
    """An object fails validation (HTTP 422, reason Invalid)."""

    kind: str
    name: str
    causes: list[FieldError] = field(default_factory=list)

    http_status = 422
    reason = "Invalid"

    def __post_init__(self) -> None:
        detail = "; ".join(str(c) for c in self.causes)
        super().__init__(f'{self.kind} "{self.name}" is invalid: {detail}')


class NotFound(LocalError):
    http_status = 404
    reason = "NotFound"
    grpc_code = "NOT_FOUND"


class Forbidden(LocalError):
    """The caller may not do this (e.g. a node reading another node's pods' Secrets)."""

    http_status = 403
    reason = "Forbidden"
    grpc_code = "PERMISSION_DENIED"


class AlreadyExists(LocalError):
    http_status = 409
    reason = "AlreadyExists"
    grpc_code = "ALREADY_EXISTS"


class Conflict(LocalError):
    """Optimistic concurrency: the object changed since the caller read it."""

    http_status = 409
    reason = "Conflict"
    grpc_code = "ABORTED"


class Gone(LocalError):
    """A resourceVersion older than the kept history: list again (HTTP 410 Expired)."""

    http_status = 410
    reason = "Expired"
    grpc_code = "OUT_OF_RANGE"


class Exhausted(LocalError):
    """An address or port range has no free entry left."""

    http_status = 422
    reason = "Invalid"
    grpc_code = "RESOURCE_EXHAUSTED"


class ConfigError(LocalError):
    """A configuration value or command-line flag is invalid."""

    exit_code = 2


class Unavailable(RemoteError):
    """A peer (api-server, agent, DNS) cannot be reached."""


class TooManyRequests(RemoteError):
    """A bounded resource (streams, connections) is full; retry when some have ended."""

    http_status = 429
    reason = "TooManyRequests"
    grpc_code = "RESOURCE_EXHAUSTED"


class PodRuntimeError(KnemuError):
    """The node could not build or tear down a pod sandbox (netns, TUN, processes)."""

    reason = "InternalError"
    grpc_code = "INTERNAL"


class MalformedPacket(LocalError):
    """A packet or frame cannot be decoded.  ``drop_reason`` names the router's drop counter
    (truncated, not_ipv4, bad_checksum, bad_vxlan_header, ...); the router counts it and goes
    on, it never lets this escape its per-packet loop."""

    def __init__(self, drop_reason: str, message: str) -> None:
        super().__init__(f"malformed packet ({drop_reason}): {message}")
        self.drop_reason = drop_reason
