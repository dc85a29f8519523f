"""ServiceAccount tokens end to end on a real api-server (TLS, RBAC): the TokenRequest API
issues signed JWTs, which authenticate as system:serviceaccount:NS:NAME with the
ServiceAccount groups, get exactly what RBAC grants that account, and stop working when the
pod they are bound to is deleted, when expired or when tampered with."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from knemu import pki
from knemu.apiserver.auth.sa_tokens import BoundToken
from knemu.testing import apiserver_inprocess, rest_session, wait_for, write_kubeconfig

KUBECTL = shutil.which("kubectl")

SA_TOKEN = "/api/v1/namespaces/default/serviceaccounts/{}/token"
WHOAMI = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
PODS = "/api/v1/namespaces/default/pods"
VIEW_BINDING = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "RoleBinding",
    "metadata": {"name": "sa-view"},
    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
    "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}],
}
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
       "spec": {"containers": [{"name": "c", "image": "busybox"}]}}  # fmt: skip


async def call(creds: pki.Credentials, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with (
        rest_session(creds) as http,
        http.request(method, creds.server + path, json=body) as resp,
    ):
        return resp.status, await resp.json()


async def test_token_request_tokens_authenticate_as_the_service_account(tmp_path: Path) -> None:
    async with apiserver_inprocess(tmp_path) as server:
        admin = server.admin
        anonymous = pki.Credentials(server.rest_url, admin.ca_pem)

        async def default_account() -> bool:
            return server.store.get("ServiceAccount", "default", "default") is not None

        await wait_for(default_account, 10, what="the default ServiceAccount")
        request = {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                   "spec": {"expirationSeconds": 1200}}  # fmt: skip
        status, answer = await call(admin, "POST", SA_TOKEN.format("default"), request)
        assert status == 201, answer
        token = answer["status"]["token"]
        assert answer["status"]["expirationTimestamp"].endswith("Z")
        as_sa = pki.Credentials(server.rest_url, admin.ca_pem, token=token)

        status, review = await call(as_sa, "POST", WHOAMI, {"kind": "SelfSubjectReview"})
        user = review["status"]["userInfo"]
        assert user["username"] == "system:serviceaccount:default:default"
        assert {"system:serviceaccounts", "system:serviceaccounts:default",
                "system:authenticated"} <= set(user["groups"])  # fmt: skip
        status, denied = await call(as_sa, "GET", PODS)
        assert status == 403 and "system:serviceaccount:default:default" in denied["message"]
        assert (await call(admin, "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/"
                           "default/rolebindings", VIEW_BINDING))[0] == 201  # fmt: skip
        assert (await call(as_sa, "GET", PODS))[0] == 200
        assert (await call(as_sa, "POST", SA_TOKEN.format("default"), {}))[0] == 403

        # bound to a pod: valid while that pod exists
        assert (await call(admin, "POST", PODS, POD))[0] == 201
        bound_request = {"spec": {"boundObjectRef": {"kind": "Pod", "name": "p"}}}
        status, answer = await call(admin, "POST", SA_TOKEN.format("default"), bound_request)
        assert status == 201, answer
        as_pod = pki.Credentials(server.rest_url, admin.ca_pem, token=answer["status"]["token"])
        status, review = await call(as_pod, "POST", WHOAMI, {"kind": "SelfSubjectReview"})
        assert review["status"]["userInfo"]["extra"]["authentication.kubernetes.io/pod-name"] == [
            "p"
        ]
        assert (await call(admin, "DELETE", PODS + "/p?gracePeriodSeconds=0"))[0] == 200

        async def pod_gone() -> bool:
            return server.store.get("Pod", "default", "p") is None

        await wait_for(pod_gone, 10, what="the pod deleted")
        status, refused = await call(as_pod, "GET", PODS)
        assert status == 401 and "no longer exists" in refused["message"]

        # expired, tampered with, or asked for too short a life
        assert server.sa_tokens is not None
        account = server.store.get("ServiceAccount", "default", "default")
        bound = BoundToken("default", "default", account["metadata"]["uid"])
        old, _ = server.sa_tokens.issuer.issue(bound, server.clock() - 7200, 600)
        stale = pki.Credentials(server.rest_url, admin.ca_pem, token=old)
        status, refused = await call(stale, "GET", PODS)
        assert status == 401 and "expired" in refused["message"]
        head, payload, sig = token.split(".")
        forged = f"{head}.{payload}.{sig[:-4]}AAAA"
        bad = pki.Credentials(server.rest_url, admin.ca_pem, token=forged)
        assert (await call(bad, "GET", PODS))[0] == 401
        assert (await call(anonymous, "GET", PODS))[0] == 401
        short = {"spec": {"expirationSeconds": 60}}
        status, refused = await call(admin, "POST", SA_TOKEN.format("default"), short)
        assert status == 400 and "600 seconds" in refused["message"]
        status, refused = await call(admin, "POST", SA_TOKEN.format("nope"), {})
        assert status == 404


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not on PATH (install it to run this)")
async def test_kubectl_create_token_then_whoami_as_the_account(tmp_path: Path) -> None:
    async with apiserver_inprocess(tmp_path) as server:

        async def default_account() -> bool:
            return server.store.get("ServiceAccount", "default", "default") is not None

        await wait_for(default_account, 10, what="the default ServiceAccount")

        def kubectl(kubeconfig: Path, *args: str) -> str:
            argv = [str(KUBECTL), "--kubeconfig", str(kubeconfig), *args]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            return done.stdout

        admin = write_kubeconfig(server.admin, tmp_path / "admin")
        token = await asyncio.to_thread(kubectl, admin, "create", "token", "default",
                                        "--duration", "2h")  # fmt: skip
        creds = pki.Credentials(server.rest_url, server.admin.ca_pem, token=token.strip())
        as_sa = write_kubeconfig(creds, tmp_path / "sa")
        whoami = await asyncio.to_thread(kubectl, as_sa, "auth", "whoami")
        assert "system:serviceaccount:default:default" in whoami
        assert "system:serviceaccounts:default" in whoami
