"""Issue 16 findings against the whole api-server in-process: each request that once answered
500 (or blew up memory) now gets a 4xx Status naming the limit or the field."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from knemu.apiserver.rest import limits
from knemu.testing import apiserver_inprocess, rest_session

PODS = "/api/v1/namespaces/default/pods"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


class Api:
    def __init__(self, base: str, http: aiohttp.ClientSession) -> None:
        self.base, self.http = base, http

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, **kw) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with apiserver_inprocess(tmp_path) as server, rest_session(server.admin) as http:
        yield Api(server.rest_url, http)


def pod(name: str, **extra: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]},
    }
    for key, value in extra.items():
        obj[key].update(value)
    return obj


def deployment(name: str, replicas: Any) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            },
        },
    }


def fields(body: Any) -> list[str]:
    assert body["kind"] == "Status", body
    return [c["field"] for c in body.get("details", {}).get("causes", [])]


async def test_a_body_over_3_mib_is_413_with_a_status(api: Api) -> None:
    big = b'{"metadata": {"name": "x"}, "pad": "' + b"x" * (limits.MAX_BODY_BYTES + 1) + b'"}'
    status, body = await api.call(
        "POST", PODS, data=big, headers={"Content-Type": "application/json"}
    )
    assert status == 413
    assert body["reason"] == "RequestEntityTooLarge" and "3145728" in body["message"]


@pytest.mark.parametrize("depth", [1_000, 100_000])
async def test_deep_json_is_400_not_a_recursion_error(api: Api, depth: int) -> None:
    body = '{"metadata": {"name": "x"}, "spec": ' + "[" * depth + "]" * depth + "}"
    status, reply = await api.call(
        "POST", PODS, data=body, headers={"Content-Type": "application/json"}
    )
    assert status == 400, reply
    assert "deep" in reply["message"] and "Traceback" not in reply["message"]


async def test_deep_yaml_and_an_alias_bomb_are_400(api: Api) -> None:
    deep = "a: " + "[" * 5000 + "]" * 5000
    status, reply = await api.call(
        "POST", PODS, data=deep, headers={"Content-Type": "application/yaml"}
    )
    assert status == 400, reply
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 9):  # 10^9 values once expanded
        prev = chr(ord("a") + i - 1)
        bomb += (
            f"{chr(ord('a') + i)}: &{chr(ord('a') + i)} [" + ", ".join([f"*{prev}"] * 10) + "]\n"
        )
    started = time.monotonic()
    status, reply = await api.call(
        "POST", PODS, data=bomb, headers={"Content-Type": "application/yaml"}
    )
    assert status == 400 and str(limits.MAX_NODES) in reply["message"], reply
    assert time.monotonic() - started < 10


async def test_delete_with_malformed_preconditions_is_400(api: Api) -> None:
    assert (await api.call("POST", PODS, json=pod("p")))[0] == 201
    for options in ({"preconditions": 5}, {"preconditions": {"uid": 5}}):
        status, reply = await api.call("DELETE", f"{PODS}/p", json=options)
        assert status == 400 and "preconditions" in reply["message"], reply
    assert (await api.call("GET", f"{PODS}/p"))[0] == 200


async def test_doubling_json_patch_is_refused_before_it_grows(api: Api) -> None:
    """31 `copy` operations (< 2 KB) once grew the server to 4.9 GB."""
    assert (await api.call("POST", PODS, json=pod("p", metadata={"annotations": {"a": "x"}})))[
        0
    ] == 201
    ops = [{"op": "add", "path": "/metadata/labels", "value": {"l": ["x" * 10]}}]
    ops += [{"op": "copy", "from": "/metadata/labels/l", "path": "/metadata/labels/l/-"}] * 31
    started = time.monotonic()
    status, reply = await api.call("PATCH", f"{PODS}/p", data=json.dumps(ops), headers=JSON_PATCH)
    assert status == 413, reply
    assert time.monotonic() - started < 10
    too_many = [{"op": "test", "path": "/kind", "value": "Pod"}] * (limits.MAX_JSON_PATCH_OPS + 1)
    status, reply = await api.call(
        "PATCH", f"{PODS}/p", data=json.dumps(too_many), headers=JSON_PATCH
    )
    assert status == 413 and "10000" in reply["message"], reply


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"metadata": {"ownerReferences": 5}}, "metadata.ownerReferences"),
        ({"metadata": {"ownerReferences": [5]}}, "metadata.ownerReferences[0]"),
        ({"metadata": {"labels": {"a": 5}}}, "metadata.labels[a]"),
        ({"spec": {"tolerations": [5]}}, "spec.tolerations[0]"),
        ({"spec": {"containers": [{"name": "c", "image": 5}]}}, "spec.containers[0].image"),
        ({"spec": {"nodeSelector": []}}, "spec.nodeSelector"),
        (
            {"spec": {"initContainers": [{"name": "i", "image": 5}]}},
            "spec.initContainers[0].image",
        ),
    ],
)
async def test_objects_of_the_wrong_shape_are_422_with_the_field(
    api: Api, extra: dict[str, Any], field: str
) -> None:
    status, reply = await api.call("POST", PODS, json=pod("p", **extra))
    assert status == 422, reply
    assert field in fields(reply)
    assert (await api.call("GET", f"{PODS}/p"))[0] == 404


async def test_wrong_shapes_by_update_patch_and_status_are_422(api: Api) -> None:
    status, created = await api.call("POST", PODS, json=pod("p"))
    assert status == 201
    status, reply = await api.call(
        "PATCH", f"{PODS}/p/status", data=json.dumps({"status": 5}), headers=MERGE_PATCH
    )
    assert status == 422 and "status" in fields(reply), reply
    patch = {"spec": {"tolerations": [5]}}
    status, reply = await api.call(
        "PATCH", f"{PODS}/p", data=json.dumps(patch), headers=MERGE_PATCH
    )
    assert status == 422 and "spec.tolerations[0]" in fields(reply), reply
    created["metadata"]["ownerReferences"] = [5]
    status, reply = await api.call("PUT", f"{PODS}/p", json=created)
    assert status == 422 and "metadata.ownerReferences[0]" in fields(reply), reply


async def test_init_container_statuses_of_the_wrong_shape_are_422(api: Api) -> None:
    assert (await api.call("POST", PODS, json=pod("p")))[0] == 201
    bad = {"status": {"initContainerStatuses": [{"name": "i", "lastState": {"terminated": 5}}]}}
    status, reply = await api.call(
        "PATCH", f"{PODS}/p/status", data=json.dumps(bad), headers=MERGE_PATCH
    )
    assert status == 422, reply
    assert "status.initContainerStatuses[0].lastState.terminated" in fields(reply), reply


@pytest.mark.parametrize("replicas", [2**31, -(2**63), 1e300, "5"])
async def test_replicas_outside_int32_are_422(api: Api, replicas: Any) -> None:
    status, reply = await api.call("POST", DEPLOYMENTS, json=deployment("d", replicas))
    assert status == 422, reply
    assert "spec.replicas" in fields(reply)


@pytest.mark.parametrize(
    "text", ['{"metadata": {"name": "x"}, "spec": NaN}', '{"a": ' + "9" * 5000 + "}"]
)
async def test_numbers_json_cannot_carry_are_400(api: Api, text: str) -> None:
    status, reply = await api.call(
        "POST", PODS, data=text, headers={"Content-Type": "application/json"}
    )
    assert status == 400, reply


async def test_scale_bodies_of_the_wrong_shape_are_4xx(api: Api) -> None:
    assert (await api.call("POST", DEPLOYMENTS, json=deployment("d", 1)))[0] == 201
    for body in ({"spec": 5}, {"metadata": 5}, {"spec": {"replicas": 2**31}}):
        status, reply = await api.call(
            "PATCH", f"{DEPLOYMENTS}/d/scale", data=json.dumps(body), headers=MERGE_PATCH
        )
        assert status == 422, reply
    status, reply = await api.call("PUT", f"{DEPLOYMENTS}/d/scale", json={"spec": 5})
    assert status == 422 and "spec" in fields(reply), reply


async def test_server_side_apply_of_a_new_object_with_bad_metadata_is_400(api: Api) -> None:
    apply = {"Content-Type": "application/apply-patch+yaml"}
    status, reply = await api.call(
        "PATCH",
        f"{DEPLOYMENTS}/new?fieldManager=fuzz",
        data=json.dumps({"metadata": 5}),
        headers=apply,
    )
    assert status == 400 and "metadata" in reply["message"], reply
