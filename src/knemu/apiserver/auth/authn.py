"""Authentication: from what a request carries to a user, as kube-apiserver's authenticator
chain does (https://kubernetes.io/docs/reference/access-authn-authz/authentication/).

The chain is tried in order: a verified client certificate (CN = user, each O = a group), then
a bearer token (the static token table).  A request with neither is anonymous
(``system:anonymous`` in ``system:unauthenticated``), which the REST adapter admits only to
the health and version paths, as kube-apiserver's structured ``anonymous.conditions`` can;
anything else unauthenticated is 401.  A bearer token that matches nothing is 401 at once,
never anonymous.  Every authenticated user is also in ``system:authenticated``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from knemu.errors import LocalError

AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
ANONYMOUS = "system:anonymous"
# Paths an anonymous client may reach (kube-apiserver binds system:public-info-viewer to
# system:unauthenticated for these; /version too), and the web console's sign-in page with
# the static assets it loads.
ANONYMOUS_PATHS = ("/healthz", "/livez", "/readyz", "/version", "/console/login")
ANONYMOUS_PREFIXES = ("/console/static/",)


class Unauthorized(LocalError):
    """401: the request carries no credentials this server accepts."""

    http_status = 401
    reason = "Unauthorized"
    grpc_code = "UNAUTHENTICATED"


class Forbidden(LocalError):
    """403: the user is known but not allowed this request."""

    http_status = 403
    reason = "Forbidden"
    grpc_code = "PERMISSION_DENIED"


@dataclass(frozen=True)
class UserInfo:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def anonymous(self) -> bool:
        return self.name == ANONYMOUS

    def as_dict(self) -> dict[str, object]:
        """The ``userInfo`` of a SelfSubjectReview / TokenReview."""
        out: dict[str, object] = {"username": self.name, "groups": list(self.groups)}
        if self.uid:
            out["uid"] = self.uid
        if self.extra:
            out["extra"] = {k: list(v) for k, v in self.extra}
        return out


ANONYMOUS_USER = UserInfo(ANONYMOUS, (UNAUTHENTICATED,))


def _authenticated(user: UserInfo) -> UserInfo:
    groups = tuple(dict.fromkeys((*user.groups, AUTHENTICATED)))
    return UserInfo(user.name, groups, user.uid, user.extra)


class Authenticator:
    """The chain: client certificate subject, then bearer token; else anonymous.

    ``tokens`` maps a bearer token to its user (kube-apiserver's ``--token-auth-file``).
    """

    def __init__(
        self,
        tokens: Mapping[str, UserInfo],
        service_accounts: Callable[[str], UserInfo] | None = None,
    ) -> None:
        self._tokens = dict(tokens)
        # a JWT's user (ServiceAccount tokens), or Unauthorized; set once the store is known
        self.service_accounts = service_accounts

    def add_token(self, token: str, user: UserInfo) -> None:
        self._tokens[token] = user

    def authenticate(
        self, cert_subject: tuple[str, tuple[str, ...]] | None, authorization: str | None
    ) -> UserInfo:
        """The request's user; Unauthorized for a bad or malformed bearer token."""
        if cert_subject is not None and cert_subject[0]:
            cn, orgs = cert_subject
            return _authenticated(UserInfo(cn, orgs))
        if authorization:
            scheme, _, token = authorization.strip().partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                raise Unauthorized(
                    "Unauthorized: the Authorization header must be 'Bearer <token>'"
                )
            user = self._tokens.get(token)
            if user is None and self.service_accounts is not None and token.count(".") == 2:
                user = self.service_accounts(token)
            if user is None:
                raise Unauthorized("Unauthorized: the bearer token is not valid for this cluster")
            return _authenticated(user)
        return ANONYMOUS_USER


def anonymous_allowed(path: str) -> bool:
    if path.startswith(ANONYMOUS_PREFIXES):
        return ".." not in path
    return path in ANONYMOUS_PATHS or path.rstrip("/") in ANONYMOUS_PATHS
