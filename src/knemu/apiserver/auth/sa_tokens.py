"""ServiceAccount tokens: signed JWTs as the TokenRequest API issues them (sans-I/O).

A token names its ServiceAccount in ``sub`` (``system:serviceaccount:NS:NAME``) and in the
``kubernetes.io`` claim (namespace, the ServiceAccount's name and uid, and, when bound, the
pod's name and uid), with ``aud``, ``iat``/``nbf``/``exp`` and a ``jti``; it is signed ES256
with the api-server's ``pki/sa.key`` (kube-apiserver's ``--service-account-signing-key-file``).
``verify`` checks the signature, issuer, audience and times; whether the objects it is bound to
still exist (with the same uids) is the caller's question (``BoundToken``), as kube-apiserver
rejects tokens of a deleted pod or ServiceAccount.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import jwt

from knemu.apiserver.auth.authn import Unauthorized, UserInfo

ISSUER = "https://kubernetes.default.svc.cluster.local"
AUDIENCE = ISSUER  # kube-apiserver's default --api-audiences is its issuer
DEFAULT_EXPIRATION_S = 3600
MIN_EXPIRATION_S = 600  # TokenRequest's minimum expirationSeconds
MAX_EXPIRATION_S = 48 * 3600
SA_PREFIX = "system:serviceaccount:"
SA_GROUP = "system:serviceaccounts"
_ALGORITHM = "ES256"


@dataclass(frozen=True)
class BoundToken:
    """Who a verified token speaks for, and the objects that must still exist."""

    namespace: str
    name: str
    uid: str
    pod_name: str = ""
    pod_uid: str = ""

    def user(self) -> UserInfo:
        extra: tuple[tuple[str, tuple[str, ...]], ...] = ()
        if self.pod_name:
            extra = (
                ("authentication.kubernetes.io/pod-name", (self.pod_name,)),
                ("authentication.kubernetes.io/pod-uid", (self.pod_uid,)),
            )
        groups = (SA_GROUP, f"{SA_GROUP}:{self.namespace}")
        return UserInfo(f"{SA_PREFIX}{self.namespace}:{self.name}", groups, self.uid, extra)


class TokenIssuer:
    """Issues and verifies ServiceAccount JWTs with one EC P-256 key (PEM)."""

    def __init__(self, private_key_pem: bytes, public_key_pem: bytes) -> None:
        self._private = private_key_pem
        self._public = public_key_pem

    def issue(
        self,
        account: BoundToken,
        now: float,
        expiration_s: int = DEFAULT_EXPIRATION_S,
        audiences: tuple[str, ...] = (AUDIENCE,),
    ) -> tuple[str, int]:
        """(token, expiry as Unix seconds)."""
        issued = int(now)
        expiry = issued + expiration_s
        claims: dict[str, Any] = {
            "namespace": account.namespace,
            "serviceaccount": {"name": account.name, "uid": account.uid},
        }
        if account.pod_name:
            claims["pod"] = {"name": account.pod_name, "uid": account.pod_uid}
        payload = {
            "iss": ISSUER,
            "sub": f"{SA_PREFIX}{account.namespace}:{account.name}",
            "aud": list(audiences),
            "iat": issued,
            "nbf": issued,
            "exp": expiry,
            "jti": secrets.token_hex(16),
            "kubernetes.io": claims,
        }
        return jwt.encode(payload, self._private, algorithm=_ALGORITHM), expiry

    def verify(self, token: str, now: float) -> BoundToken:
        """The account a token speaks for; Unauthorized when it is not one of this cluster's,
        has expired or is not meant for this api-server."""
        try:
            payload = jwt.decode(
                token,
                self._public,
                algorithms=[_ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                # the times are checked against ``now`` below (the caller's clock)
                options={
                    "require": ["exp", "iat", "sub", "aud", "iss"],
                    "verify_iat": False,
                    "verify_exp": False,
                    "verify_nbf": False,
                },
            )
            if float(payload["exp"]) <= now or float(payload.get("nbf", 0)) > now + 60:
                raise jwt.ExpiredSignatureError("outside its validity")
            k8s = payload["kubernetes.io"]
            account = k8s["serviceaccount"]
            pod = k8s.get("pod") or {}
            bound = BoundToken(str(k8s["namespace"]), str(account["name"]), str(account["uid"]),
                               str(pod.get("name", "")), str(pod.get("uid", "")))  # fmt: skip
        except jwt.ExpiredSignatureError:
            raise Unauthorized("Unauthorized: the service account token has expired") from None
        except (jwt.InvalidTokenError, KeyError, TypeError, ValueError):
            raise Unauthorized(
                "Unauthorized: the bearer token is not valid for this cluster"
            ) from None
        if payload["sub"] != f"{SA_PREFIX}{bound.namespace}:{bound.name}":
            raise Unauthorized("Unauthorized: the bearer token is not valid for this cluster")
        return bound


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


def expiration_seconds(requested: Any) -> int:
    """TokenRequest's spec.expirationSeconds: default an hour, at least 10 minutes, at most
    48 hours (kube-apiserver caps it too)."""
    if requested is None:
        return DEFAULT_EXPIRATION_S
    if isinstance(requested, bool) or not isinstance(requested, int):
        raise ValueError("spec.expirationSeconds must be an integer")
    if requested < MIN_EXPIRATION_S:
        raise ValueError(f"spec.expirationSeconds may not specify a duration less than "
                         f"{MIN_EXPIRATION_S} seconds")  # fmt: skip
    return min(requested, MAX_EXPIRATION_S)
