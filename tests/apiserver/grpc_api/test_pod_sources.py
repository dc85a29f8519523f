"""GetPodSources: a node gets the ConfigMaps and Secrets of its own pods, and nothing else
(the Node authorizer's rule), over a real gRPC connection."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from knemu import errors
from knemu.apiserver.auth.authn import Unauthorized
from knemu.apiserver.auth.sa_tokens import BoundToken, TokenIssuer
from knemu.apiserver.grpc_api.convert import pod_to_proto
from knemu.apiserver.grpc_api.pod_sources import (
    PodTokens,
    pod_references,
    pod_sources,
    service_account_name,
)
from knemu.proto import knemu_pb2 as pb

from .stack import NOW, Stack, pod


def _config_map(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default"}, "data": data}  # fmt: skip


def _secret(name: str, **data: str) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": "default"}, "data": encoded}  # fmt: skip


def _consumer(name: str, node: str) -> dict[str, Any]:
    obj = pod(name, node=node)
    obj["spec"]["volumes"] = [
        {"name": "cfg", "configMap": {"name": "cfg", "items": [{"key": "a", "path": "x/a"}],
                                      "defaultMode": 0o600, "optional": True}},
        {"name": "sec", "secret": {"secretName": "sec"}},
    ]  # fmt: skip
    init = {"name": "i", "image": "busybox", "envFrom": [{"secretRef": {"name": "init-sec"}}]}
    obj["spec"]["initContainers"] = [init]
    obj["spec"]["containers"][0]["env"] = [
        {"name": "K", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}},
        {"name": "M", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory",
                                                         "divisor": "1Mi"}}},
    ]  # fmt: skip
    return obj


def test_references_cover_volumes_env_and_env_from_of_every_container() -> None:
    assert pod_references(_consumer("p", "node-1")) == [
        ("ConfigMap", "cfg"), ("ConfigMap", "env-cm"), ("Secret", "init-sec"), ("Secret", "sec"),
    ]  # fmt: skip
    assert pod_references({"spec": {"volumes": [5, {"configMap": {"name": 7}}]}}) == []


def test_pod_converts_sources_for_the_node() -> None:
    p = pod_to_proto(_consumer("p", "node-1"))
    cfg, sec = p.volumes
    assert (cfg.kind, cfg.source_name, cfg.default_mode, cfg.optional) == (
        "configMap", "cfg", 0o600, True,
    )  # fmt: skip
    assert [(i.key, i.path, i.HasField("mode")) for i in cfg.key_items] == [("a", "x/a", False)]
    assert (sec.kind, sec.source_name, sec.HasField("default_mode")) == ("secret", "sec", False)
    env_k, env_m = p.containers[0].env
    assert (env_k.key_ref.kind, env_k.key_ref.name, env_k.key_ref.key) == (
        "ConfigMap", "env-cm", "k",
    )  # fmt: skip
    assert (env_m.resource, env_m.resource_divisor_millis) == ("limits.memory", 1048576000)
    assert [(s.kind, s.name) for s in p.init_containers[0].env_from] == [("Secret", "init-sec")]


async def test_a_node_gets_exactly_its_pods_objects(stack: Stack) -> None:
    for obj in (_config_map("cfg", a="1", b="2"), _config_map("env-cm", k="v"),
                _config_map("unrelated", x="y"), _secret("sec", password="s3cr3t"),
                _secret("other", token="t")):  # fmt: skip
        stack.store.create(obj, NOW)
    uid = stack.store.create(_consumer("web", "node-1"), NOW)["metadata"]["uid"]
    reply = await stack.client.get_pod_sources("node-1", "default", "web", uid)
    got = {(o.kind, o.name): (o.found, dict(o.data)) for o in reply.objects}
    assert got == {
        ("ConfigMap", "cfg"): (True, {"a": b"1", "b": b"2"}),
        ("ConfigMap", "env-cm"): (True, {"k": b"v"}),
        ("Secret", "init-sec"): (False, {}),  # named but absent: the node reports it
        ("Secret", "sec"): (True, {"password": b"s3cr3t"}),  # decoded from base64
    }
    assert all(o.resource_version > 0 for o in reply.objects if o.found)


async def test_another_node_or_a_stale_uid_is_refused(stack: Stack) -> None:
    stack.store.create(_secret("sec", password="s3cr3t"), NOW)
    uid = stack.store.create(_consumer("web", "node-1"), NOW)["metadata"]["uid"]
    with pytest.raises(errors.Forbidden, match="not bound to it"):
        await stack.client.get_pod_sources("node-2", "default", "web", uid)
    with pytest.raises(errors.Forbidden):
        await stack.client.get_pod_sources("", "default", "web", uid)
    with pytest.raises(errors.NotFound, match="does not exist"):
        await stack.client.get_pod_sources("node-1", "default", "web", "other-uid")
    with pytest.raises(errors.NotFound):
        await stack.client.get_pod_sources("node-1", "default", "absent", "")
    stack.store.create(pod("pending"), NOW)  # not bound yet: no node may read its secrets
    with pytest.raises(errors.Forbidden):
        await stack.client.get_pod_sources("node-1", "default", "pending", "")


def test_pod_security_context_applies_to_containers_without_their_own() -> None:
    obj = pod("p", node="node-1")
    obj["spec"]["securityContext"] = {"runAsUser": 1000, "runAsGroup": 3000}
    obj["spec"]["containers"].append(
        {"name": "own", "image": "busybox", "securityContext": {"runAsUser": 0,
                                                                "privileged": True}}
    )  # fmt: skip
    first, own = pod_to_proto(obj).containers
    assert (first.run_as_user, first.run_as_group, first.privileged) == (1000, 3000, False)
    assert (own.run_as_user, own.run_as_group, own.privileged) == (0, 3000, True)


def _issuer() -> TokenIssuer:
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return TokenIssuer(private, public)


def _tokens(objects: dict[tuple[str, str, str], dict[str, Any]], issuer: TokenIssuer) -> PodTokens:
    def issue(p: Any, expiration_s: int) -> tuple[str, int]:
        ns, sa = p["metadata"]["namespace"], service_account_name(p)
        account = objects.get(("ServiceAccount", ns, sa))
        if account is None:
            raise errors.NotFound(f'serviceaccounts "{sa}" not found')
        bound = BoundToken(ns, sa, account["metadata"]["uid"], p["metadata"]["name"],
                           p["metadata"]["uid"])  # fmt: skip
        return issuer.issue(bound, NOW, expiration_s)

    return PodTokens(issue, b"-----CA-----\n")


def test_token_for_the_pods_service_account_bound_to_the_pod() -> None:
    issuer = _issuer()
    p = pod("p", node="node-1")
    p["metadata"].update(namespace="default", uid="pod-uid")
    p["spec"]["serviceAccountName"] = "robot"
    account = {"metadata": {"name": "robot", "namespace": "default", "uid": "sa-uid"}}
    objects = {("Pod", "default", "p"): p, ("ServiceAccount", "default", "robot"): account}
    request = pb.PodSourcesRequest(node_name="node-1", namespace="default", pod_name="p",
                                   service_account_token=True)  # fmt: skip
    reply = pod_sources(lambda *k: objects.get(k), request, _tokens(objects, issuer))
    (token,) = reply.objects
    assert (token.kind, token.name, token.found) == ("ServiceAccountToken", "robot", True)
    assert token.expiration_seconds == 3600 and token.expiration_unix == int(NOW) + 3600
    assert token.data["ca.crt"] == b"-----CA-----\n" and token.data["namespace"] == b"default"
    bound = issuer.verify(token.data["token"].decode(), NOW + 10)
    assert bound == BoundToken("default", "robot", "sa-uid", "p", "pod-uid")
    with pytest.raises(Unauthorized, match="expired"):
        issuer.verify(token.data["token"].decode(), NOW + 3600)
    # not asked for, no token; the pod's or the ServiceAccount's automount: false, none either
    asked = pb.PodSourcesRequest(node_name="node-1", namespace="default", pod_name="p")
    assert not pod_sources(lambda *k: objects.get(k), asked, _tokens(objects, issuer)).objects
    account["automountServiceAccountToken"] = False
    (off,) = pod_sources(lambda *k: objects.get(k), request, _tokens(objects, issuer)).objects
    assert (off.found, dict(off.data)) == (False, {})
    p["spec"]["automountServiceAccountToken"] = True  # the pod's setting wins
    (on,) = pod_sources(lambda *k: objects.get(k), request, _tokens(objects, issuer)).objects
    assert on.found
    del objects[("ServiceAccount", "default", "robot")]
    with pytest.raises(errors.NotFound, match="robot"):
        pod_sources(lambda *k: objects.get(k), request, _tokens(objects, issuer))
