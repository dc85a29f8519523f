"""Fuzzing the api-server's REST and gRPC surfaces end to end (issue 16): random JSON
shapes, depths, sizes and patches against a real in-process server; no answer is a 5xx
(gRPC: never UNKNOWN or INTERNAL).  Bounded: a fixed number of examples per property."""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from knemu.apiserver.server import ApiServer
from knemu.config import ApiServerConfig

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PATCH_TYPES = [
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/json-patch+json",
    "application/apply-patch+yaml",
]
RESOURCES = {
    "/api/v1/namespaces/default/pods": {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}]}]},
    },
    "/api/v1/namespaces/default/services": {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 80}]},
    },
    "/apis/apps/v1/namespaces/default/deployments": {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "d"}},
            "template": {
                "metadata": {"labels": {"app": "d"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            },
        },
    },
}

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
# keys the server reads, so random values land where they matter
KEYS = [
    "metadata", "spec", "status", "name", "namespace", "labels", "annotations", "uid",
    "ownerReferences", "finalizers", "preconditions", "resourceVersion", "dryRun",
    "propagationPolicy", "containers", "image", "ports", "port", "targetPort", "selector",
    "matchLabels", "tolerations", "replicas", "template", "nodeName", "type", "kind",
]  # fmt: skip
keys = st.sampled_from(KEYS) | st.text(max_size=8)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)


@dataclass
class Served:
    host: str
    port: int
    grpc_target: str
    loop: asyncio.AbstractEventLoop
    tls: ssl.SSLContext  # the admin's: requests are authenticated, so they reach the handlers

    def call(
        self, method: str, path: str, body: bytes = b"", ctype: str = "application/json"
    ) -> int:
        conn = http.client.HTTPSConnection(self.host, self.port, timeout=30, context=self.tls)
        try:
            headers = {"Content-Type": ctype} if body else {}
            conn.request(method, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
            if resp.status >= 500:
                pytest.fail(f"{method} {path} -> {resp.status}: {payload[:500]!r}")
            return resp.status
        finally:
            conn.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One api-server for the whole module, in a thread with its own event loop."""
    data: Path = tmp_path_factory.mktemp("fuzz") / "data"
    config = ApiServerConfig(data_dir=str(data), listen="127.0.0.1:0", grpc_listen="127.0.0.1:0")
    loop = asyncio.new_event_loop()
    ready: list[ApiServer] = []
    stop = asyncio.Event()
    started = threading.Event()

    async def main() -> None:
        async with ApiServer(config) as server:
            ready.append(server)
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(30), "api-server did not start"
    server = ready[0]
    host, port = server.rest_url.removeprefix("https://").rsplit(":", 1)
    assert server.admin is not None
    tls = server.admin.ssl_context()
    assert tls is not None
    try:
        yield Served(host, int(port), server.grpc_target, loop, tls)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


def mutate(obj: Any, path: list[int], value: Any) -> Any:
    """Replace the node that ``path`` picks (indices into each level's keys) by ``value``."""
    if not path or not isinstance(obj, (dict, list)) or not obj:
        return value
    keys = list(obj) if isinstance(obj, dict) else list(range(len(obj)))
    key = keys[path[0] % len(keys)]
    obj[key] = mutate(obj[key], path[1:], value)
    return obj


resources = st.sampled_from(sorted(RESOURCES))
paths = st.lists(st.integers(min_value=0, max_value=7), max_size=6)


@FUZZ
@given(resource=resources, path=paths, value=json_values)
def test_creates_of_mutated_objects_never_answer_5xx(
    served: Served, resource: str, path: list[int], value: Any
) -> None:
    obj = mutate(json.loads(json.dumps(RESOURCES[resource])), path, value)
    obj_name = f"f{abs(hash(json.dumps(obj, sort_keys=True))) % 10**8}"
    if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
        obj["metadata"]["name"] = obj_name
    status = served.call("POST", resource, json.dumps(obj).encode())
    if status == 201:
        served.call("DELETE", f"{resource}/{obj_name}")


@FUZZ
@given(
    resource=resources,
    ctype=st.sampled_from(PATCH_TYPES),
    patch=json_values,
    sub=st.sampled_from(["", "/status"]),
)
def test_patches_never_answer_5xx(
    served: Served, resource: str, ctype: str, patch: Any, sub: str
) -> None:
    name = RESOURCES[resource]["metadata"]["name"]
    served.call("POST", resource, json.dumps(RESOURCES[resource]).encode())  # 201 or 409
    manager = "?fieldManager=fuzz" if ctype.startswith("application/apply-patch") else ""
    served.call("PATCH", f"{resource}/{name}{sub}{manager}", json.dumps(patch).encode(), ctype)


json_patch_ops = st.lists(
    st.fixed_dictionaries(
        {
            "op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "x"]),
            "path": st.sampled_from(
                ["/metadata/labels", "/spec", "/spec/containers/0", "/x", "", "/metadata/labels/a"]
            ),
        },
        optional={
            "value": json_values,
            "from": st.sampled_from(["/metadata", "/spec", "", "/nope", "/metadata/labels"]),
        },
    ),
    max_size=40,
)


@FUZZ
@given(ops=json_patch_ops)
def test_json_patches_never_answer_5xx(served: Served, ops: list[Any]) -> None:
    resource = "/api/v1/namespaces/default/pods"
    served.call("POST", resource, json.dumps(RESOURCES[resource]).encode())
    served.call("PATCH", f"{resource}/p", json.dumps(ops).encode(), "application/json-patch+json")


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    depth=st.integers(min_value=1, max_value=20_000),
    opener=st.sampled_from(["[", '{"a":']),
    ctype=st.sampled_from(["application/json", "application/yaml"]),
    method=st.sampled_from(["POST", "PUT", "PATCH", "DELETE"]),
)
def test_deep_bodies_never_answer_5xx(
    served: Served, depth: int, opener: str, ctype: str, method: str
) -> None:
    closer = "]" if opener == "[" else "}"
    body = (
        '{"metadata": {"name": "p"}, "spec": ' + opener * depth + "1" + closer * depth + "}"
    ).encode()
    resource = "/api/v1/namespaces/default/pods"
    path = resource if method == "POST" else f"{resource}/p"
    if method == "PATCH":
        ctype = "application/merge-patch+json"
    served.call(method, path, body, ctype)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    size=st.integers(min_value=0, max_value=5 * 1024 * 1024),
    method=st.sampled_from(["POST", "PUT", "PATCH"]),
)
def test_large_bodies_never_answer_5xx(served: Served, size: int, method: str) -> None:
    body = b'{"metadata": {"name": "p"}, "pad": "' + b"x" * size + b'"}'
    resource = "/api/v1/namespaces/default/pods"
    path = resource if method == "POST" else f"{resource}/p"
    ctype = "application/merge-patch+json" if method == "PATCH" else "application/json"
    status = served.call(method, path, body, ctype)
    assert status != 413 or size > 3 * 1024 * 1024 - 64


@FUZZ
@given(
    options=json_values,
    query=st.sampled_from(["", "?propagationPolicy=Orphan", "?dryRun=All", "?propagationPolicy=5"]),
)
def test_deletes_with_any_options_never_answer_5xx(
    served: Served, options: Any, query: str
) -> None:
    resource = "/api/v1/namespaces/default/services"
    served.call("POST", resource, json.dumps(RESOURCES[resource]).encode())
    served.call("DELETE", f"{resource}/s{query}", json.dumps(options).encode())


GRPC_METHODS = ["RegisterNode", "RenewLease", "ReportPodStatus", "RecordEvent", "Watch"]
BAD_CODES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    method=st.sampled_from(GRPC_METHODS),
    payload=st.binary(max_size=512) | st.builds(lambda n: b"\x0a" * n, st.integers(0, 3000)),
)
def test_grpc_requests_never_fail_internally(served: Served, method: str, payload: bytes) -> None:
    async def call() -> None:
        async with grpc.aio.insecure_channel(served.grpc_target) as channel:
            path = f"/knemu.v1.Cluster/{method}"
            ident = lambda b: b  # noqa: E731 - raw bytes both ways
            try:
                if method == "Watch":
                    stream = channel.unary_stream(
                        path, request_serializer=ident, response_deserializer=ident
                    )
                    async for _ in stream(payload, timeout=0.3):
                        pass
                else:
                    unary = channel.unary_unary(
                        path, request_serializer=ident, response_deserializer=ident
                    )
                    await unary(payload, timeout=5)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() not in BAD_CODES, (method, payload[:80], exc.details())

    asyncio.run(call())


def test_grpc_oversized_requests_are_resource_exhausted(served: Served) -> None:
    async def call() -> grpc.StatusCode:
        options = [("grpc.max_send_message_length", 16 * 1024 * 1024)]
        async with grpc.aio.insecure_channel(served.grpc_target, options=options) as channel:
            unary = channel.unary_unary(
                "/knemu.v1.Cluster/RecordEvent",
                request_serializer=lambda b: b,
                response_deserializer=lambda b: b,
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await unary(b"\x0a\x80\x80\x80\x02" + b"x" * (4 << 20), timeout=10)
            return err.value.code()

    assert asyncio.run(call()) == grpc.StatusCode.RESOURCE_EXHAUSTED


@FUZZ
@given(
    body=json_values,
    method=st.sampled_from(["PUT", "PATCH"]),
    name=st.sampled_from(["d", "missing"]),
    ctype=st.sampled_from(PATCH_TYPES),
)
def test_scale_and_apply_never_answer_5xx(
    served: Served, body: Any, method: str, name: str, ctype: str
) -> None:
    resource = "/apis/apps/v1/namespaces/default/deployments"
    served.call("POST", resource, json.dumps(RESOURCES[resource]).encode())
    ctype = ctype if method == "PATCH" else "application/json"
    served.call(method, f"{resource}/d/scale", json.dumps(body).encode(), ctype)
    served.call("PATCH", f"{resource}/{name}", json.dumps(body).encode(), ctype)
