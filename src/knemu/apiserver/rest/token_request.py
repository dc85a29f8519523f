"""ServiceAccount tokens over HTTP: the TokenRequest subresource (``kubectl create token``)
and the bearer-token check that accepts them (aiohttp adapter over ``auth/sa_tokens``).

``POST /api/v1/namespaces/NS/serviceaccounts/NAME/token`` takes a TokenRequest
(``spec.audiences``, ``spec.expirationSeconds``, ``spec.boundObjectRef`` to a Pod) and answers
it with ``status.token`` and ``status.expirationTimestamp``; RBAC asks for ``create`` on
``serviceaccounts/token``.  A token is accepted while its ServiceAccount (and its bound pod)
still exist with the uids it names, as kube-apiserver's ``serviceaccount.Validator`` checks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from knemu.apiserver.auth.authn import Unauthorized, UserInfo
from knemu.apiserver.auth.sa_tokens import AUDIENCE, BoundToken, TokenIssuer, expiration_seconds
from knemu.apiserver.rest.bodies import decode_object
from knemu.apiserver.rest.status import BadRequest, status_failure
from knemu.apiserver.storage.store import Store
from knemu.errors import KnemuError, NotFound

Obj = dict[str, Any]
PATH = "/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"


class ServiceAccountTokens:
    def __init__(self, store: Store, issuer: TokenIssuer, clock: Callable[[], float]) -> None:
        self.store, self.issuer, self.clock = store, issuer, clock

    def user(self, token: str) -> UserInfo:
        """The user of a ServiceAccount JWT; Unauthorized when it is bad, expired, or its
        ServiceAccount or pod is gone (or was replaced: another uid)."""
        bound = self.issuer.verify(token, self.clock())
        account = self.store.get("ServiceAccount", bound.namespace, bound.name)
        if account is None or account["metadata"].get("uid") != bound.uid:
            raise Unauthorized(
                f"Unauthorized: service account {bound.namespace}/{bound.name} no longer exists"
            )
        if bound.pod_name:
            pod = self.store.get("Pod", bound.namespace, bound.pod_name)
            if pod is None or pod["metadata"].get("uid") != bound.pod_uid:
                raise Unauthorized(
                    f"Unauthorized: the token is bound to pod {bound.namespace}/"
                    f"{bound.pod_name}, which no longer exists"
                )
        return bound.user()

    def issue_for_pod(self, pod: Mapping[str, Any], expiration_s: int) -> tuple[str, int]:
        """A token for a pod's ServiceAccount bound to the pod (the kubelet's projected
        token); NotFound when the ServiceAccount does not exist."""
        meta = pod["metadata"]
        ns = meta.get("namespace", "default")
        sa_name = pod.get("spec", {}).get("serviceAccountName") or "default"
        account = self.store.get("ServiceAccount", ns, sa_name)
        if account is None:
            raise NotFound(f'serviceaccounts "{sa_name}" not found in namespace {ns}')
        bound = BoundToken(ns, sa_name, account["metadata"]["uid"], meta["name"], meta["uid"])
        return self.issuer.issue(bound, self.clock(), expiration_s)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(PATH, self._token_request)

    async def _token_request(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["namespace"], request.match_info["name"]
        try:
            body = decode_object(await request.read(), request.content_type)
            answer = self.answer(ns, name, body)
        except KnemuError as err:
            return web.json_response(status_failure(err, "serviceaccounts", name),
                                     status=err.http_status, dumps=json.dumps)  # fmt: skip
        return web.json_response(answer, status=201, dumps=json.dumps)

    def answer(self, ns: str, name: str, body: Obj) -> Obj:
        """The TokenRequest ``body`` for ServiceAccount ns/name, answered."""
        if body.get("kind", "TokenRequest") != "TokenRequest":
            raise BadRequest(f"the body must be a TokenRequest, not {body.get('kind')!r}")
        spec = body.get("spec") or {}
        if not isinstance(spec, dict):
            raise BadRequest("spec must be an object")
        account = self.store.get("ServiceAccount", ns, name)
        if account is None:
            raise NotFound(f'serviceaccounts "{name}" not found')
        audiences = spec.get("audiences") or [AUDIENCE]
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise BadRequest("spec.audiences must be a list of strings")
        try:
            expiration = expiration_seconds(spec.get("expirationSeconds"))
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        pod_name = pod_uid = ""
        ref = spec.get("boundObjectRef")
        if ref:
            if not isinstance(ref, dict) or ref.get("kind") != "Pod":
                raise BadRequest("spec.boundObjectRef: only a Pod can be bound (kind: Pod)")
            pod = self.store.get("Pod", ns, str(ref.get("name", "")))
            if pod is None or (ref.get("uid") and ref["uid"] != pod["metadata"]["uid"]):
                raise NotFound(f'pods "{ref.get("name")}" not found (spec.boundObjectRef)')
            pod_name, pod_uid = pod["metadata"]["name"], pod["metadata"]["uid"]
        bound = BoundToken(ns, name, account["metadata"]["uid"], pod_name, pod_uid)
        token, expiry = self.issuer.issue(bound, self.clock(), expiration, tuple(audiences))
        stamp = datetime.fromtimestamp(expiry, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": {"name": name, "namespace": ns},
            "spec": {**spec, "audiences": audiences, "expirationSeconds": expiration},
            "status": {"token": token, "expirationTimestamp": stamp},
        }
