"""REST API over HTTP on loopback: verbs, shapes, errors, subresources, watch."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from knemu.testing import rest_session, wait_for

from .rest_env import NOW, RestEnv

PODS = "/api/v1/namespaces/default/pods"
MERGE = {"Content-Type": "application/merge-patch+json"}
DEPLOYS = "/apis/apps/v1/namespaces/default/deployments"


def pod(name: str, app: str = "web", **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": "nginx"}], **extra},
    }


def deployment(name: str, replicas: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}},
    }


async def test_discovery_documents(rest: RestEnv) -> None:
    status, body = await rest.call("GET", "/api")
    assert status == 200 and body["versions"] == ["v1"]
    _, core = await rest.call("GET", "/api/v1")
    names = {r["name"] for r in core["resources"]}
    assert {"pods", "pods/status", "services", "nodes", "namespaces", "endpoints"} <= names
    _, groups = await rest.call("GET", "/apis")
    assert {g["name"] for g in groups["groups"]} == {
        "apps",
        "authentication.k8s.io",
        "authorization.k8s.io",
        "coordination.k8s.io",
        "discovery.k8s.io",
        "metrics.k8s.io",
        "networking.k8s.io",
        "rbac.authorization.k8s.io",
    }
    _, apps = await rest.call("GET", "/apis/apps/v1")
    scale = next(r for r in apps["resources"] if r["name"] == "deployments/scale")
    assert scale["kind"] == "Scale" and scale["group"] == "autoscaling"
    assert (await rest.call("GET", "/apis/nope/v1"))[0] == 404
    assert (await rest.call("GET", "/version"))[1]["major"] == "1"
    assert await rest.call("GET", "/healthz") == (200, "ok")


async def test_create_get_list(rest: RestEnv) -> None:
    status, created = await rest.call("POST", PODS, json=pod("a"))
    assert status == 201
    assert created["metadata"]["namespace"] == "default"
    assert created["metadata"]["creationTimestamp"] == "2023-11-14T22:13:20Z"
    await rest.call("POST", "/api/v1/namespaces/other/pods", json=pod("b", app="db"))
    status, got = await rest.call("GET", PODS + "/a")
    assert status == 200 and got == created
    _, lst = await rest.call("GET", PODS)
    assert lst["kind"] == "PodList" and lst["apiVersion"] == "v1"
    assert lst["metadata"]["resourceVersion"] == "2"
    assert [p["metadata"]["name"] for p in lst["items"]] == ["a"]
    _, everywhere = await rest.call("GET", "/api/v1/pods")
    assert [p["metadata"]["name"] for p in everywhere["items"]] == ["a", "b"]
    _, by_label = await rest.call("GET", "/api/v1/pods", params={"labelSelector": "app in (db)"})
    assert [p["metadata"]["name"] for p in by_label["items"]] == ["b"]
    _, by_field = await rest.call(
        "GET", "/api/v1/pods", params={"fieldSelector": "metadata.name!=b"}
    )
    assert [p["metadata"]["name"] for p in by_field["items"]] == ["a"]


async def test_list_in_chunks(rest: RestEnv) -> None:
    for i in range(5):
        await rest.call("POST", PODS, json=pod(f"p{i}"))
    names: list[str] = []
    params = {"limit": "2"}
    for _ in range(5):
        status, page = await rest.call("GET", PODS, params=params)
        assert status == 200 and len(page["items"]) <= 2
        names += [p["metadata"]["name"] for p in page["items"]]
        if "continue" not in page["metadata"]:
            break
        params = {"limit": "2", "continue": page["metadata"]["continue"]}
    assert names == [f"p{i}" for i in range(5)]
    status, body = await rest.call("GET", PODS, params={"continue": "garbage!"})
    assert status == 400 and "continue token" in body["message"]


async def test_body_without_kind_is_defaulted_from_the_path(rest: RestEnv) -> None:
    body = {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}
    status, svc = await rest.call("POST", "/api/v1/namespaces/default/services", json=body)
    assert status == 201 and svc["kind"] == "Service" and svc["apiVersion"] == "v1"


async def test_error_shapes(rest: RestEnv) -> None:
    await rest.call("POST", PODS, json=pod("a"))
    status, dup = await rest.call("POST", PODS, json=pod("a"))
    assert status == 409 and dup["kind"] == "Status" and dup["reason"] == "AlreadyExists"
    assert dup["status"] == "Failure" and dup["code"] == 409
    bad = pod("b")
    bad["spec"]["containers"][0]["image"] = ""
    status, inv = await rest.call("POST", PODS, json=bad)
    assert status == 422 and inv["reason"] == "Invalid"
    assert inv["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": "Required value",
            "field": "spec.containers[0].image",
        }
    ]
    status, msg = await rest.call(
        "POST", PODS, data=b'{"kind": ', headers={"Content-Type": "application/json"}
    )
    assert status == 400 and "not valid JSON" in msg["message"]
    status, msg = await rest.call("POST", "/api/v1/namespaces/default/services", json=pod("c"))
    assert status == 400 and "is a Pod" in msg["message"]
    status, msg = await rest.call(
        "POST",
        "/api/v1/namespaces/x/pods",
        json=dict(pod("c"), metadata={"name": "c", "namespace": "y"}),
    )
    assert status == 400 and "does not match" in msg["message"]
    status, msg = await rest.call("GET", PODS + "/missing")
    assert status == 404 and msg["reason"] == "NotFound" and msg["details"]["name"] == "missing"
    assert (await rest.call("GET", "/api/v1/widgets"))[0] == 404
    assert (await rest.call("GET", "/api/v1/namespaces/default/nodes"))[0] == 404
    assert (await rest.call("POST", PODS + "/a"))[0] == 405


async def test_unexpected_exception_is_a_500_status(rest: RestEnv) -> None:
    status, body = await rest.call("POST", PODS, json=pod("kt-bug"))
    assert status == 500 and body["kind"] == "Status" and "simulated bug" in body["message"]
    assert (await rest.call("GET", "/healthz"))[0] == 200  # still serving


async def test_yaml_body(rest: RestEnv) -> None:
    text = "kind: Pod\nmetadata:\n  name: y\nspec:\n  containers:\n  - name: c\n    image: nginx\n"
    status, created = await rest.call(
        "POST", PODS, data=text, headers={"Content-Type": "application/yaml"}
    )
    assert status == 201 and created["metadata"]["name"] == "y"
    status, msg = await rest.call(
        "POST", PODS, data="a: [", headers={"Content-Type": "application/yaml"}
    )
    assert status == 400 and "not valid YAML" in msg["message"]


async def test_replace_conflict_and_status_split(rest: RestEnv) -> None:
    _, created = await rest.call("POST", PODS, json=pod("a"))
    created["status"] = {"phase": "Running"}
    created["metadata"]["labels"]["tier"] = "front"
    status, replaced = await rest.call("PUT", PODS + "/a", json=created)
    assert status == 200 and "status" not in replaced  # main resource ignores status
    assert replaced["metadata"]["labels"]["tier"] == "front"
    status, conflict = await rest.call("PUT", PODS + "/a", json=created)  # stale rv 1
    assert status == 409 and conflict["reason"] == "Conflict"
    replaced["status"] = {"phase": "Running"}
    replaced["spec"]["hostname"] = "ignored"
    status, st = await rest.call("PUT", PODS + "/a/status", json=replaced)
    assert status == 200 and st["status"] == {"phase": "Running"}
    assert "hostname" not in st["spec"]  # the status subresource ignores spec
    status, msg = await rest.call("PUT", PODS + "/b", json=pod("a"))
    assert status == 400 and "does not match the name" in msg["message"]


async def test_patches(rest: RestEnv) -> None:
    await rest.call("POST", PODS, json=pod("a"))
    merge = {"metadata": {"labels": {"app": None, "x": "1"}}}
    status, out = await rest.call(
        "PATCH",
        PODS + "/a",
        data=json.dumps(merge),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert status == 200 and out["metadata"]["labels"] == {"x": "1"}
    smp = {"spec": {"hostname": "h"}}
    _, out = await rest.call(
        "PATCH",
        PODS + "/a",
        data=json.dumps(smp),
        headers={"Content-Type": "application/strategic-merge-patch+json"},
    )
    assert out["spec"]["hostname"] == "h"
    ops = [
        {"op": "replace", "path": "/spec/hostname", "value": "j"},
        {"op": "add", "path": "/metadata/labels/y", "value": "2"},
    ]
    _, out = await rest.call(
        "PATCH",
        PODS + "/a",
        data=json.dumps(ops),
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert out["spec"]["hostname"] == "j" and out["metadata"]["labels"]["y"] == "2"
    status_patch = {"status": {"podIP": "10.244.1.5"}}
    _, out = await rest.call(
        "PATCH",
        PODS + "/a/status",
        data=json.dumps(status_patch),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert out["status"]["podIP"] == "10.244.1.5"
    status, msg = await rest.call(
        "PATCH", PODS + "/a", data="{}", headers={"Content-Type": "text/plain"}
    )
    assert status == 415 and "merge-patch" in msg["message"]
    status, _msg = await rest.call(
        "PATCH",
        PODS + "/a",
        data='{"metadata": {"name": "zzz"}}',
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert status == 400


async def test_json_patch_errors_are_status_answers(rest: RestEnv) -> None:
    await rest.call("POST", PODS, json=pod("a"))
    hdr = {"Content-Type": "application/json-patch+json"}
    failed_test = [{"op": "test", "path": "/spec/hostname", "value": "nope"}]
    status, body = await rest.call("PATCH", PODS + "/a", json=failed_test, headers=hdr)
    assert status == 422 and body["kind"] == "Status" and body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "/spec/hostname"
    missing = [{"op": "remove", "path": "/spec/nothing"}]
    status, body = await rest.call("PATCH", PODS + "/a", json=missing, headers=hdr)
    assert status == 400 and body["kind"] == "Status" and body["reason"] == "BadRequest"
    assert "operation 0 (remove '/spec/nothing')" in body["message"]
    _, stored = await rest.call("GET", PODS + "/a")
    assert "hostname" not in stored["spec"]  # nothing was written


async def test_apply_patch_creates_then_updates(rest: RestEnv) -> None:
    body = json.dumps(pod("ssa"))
    hdr = {"Content-Type": "application/apply-patch+yaml"}
    url = PODS + "/ssa?fieldManager=me"
    status, created = await rest.call("PATCH", url, data=body, headers=hdr)
    assert status == 201 and created["metadata"]["name"] == "ssa"
    assert created["metadata"]["managedFields"][0]["manager"] == "me"
    again = pod("ssa", hostname="q")
    status, updated = await rest.call("PATCH", url, data=json.dumps(again), headers=hdr)
    assert status == 200 and updated["spec"]["hostname"] == "q"
    status, missing = await rest.call("PATCH", PODS + "/ssa", data=body, headers=hdr)
    assert status == 422 and missing["details"]["causes"][0]["field"] == "fieldManager"
    other = pod("ssa", hostname="z")
    status, conflict = await rest.call(
        "PATCH", PODS + "/ssa?fieldManager=you", data=json.dumps(other), headers=hdr
    )
    assert status == 409 and conflict["reason"] == "Conflict"
    assert conflict["message"].endswith('conflict with "me" using v1: .spec.hostname')
    status, forced = await rest.call(
        "PATCH", PODS + "/ssa?fieldManager=you&force=true", data=json.dumps(other), headers=hdr
    )
    assert status == 200 and forced["spec"]["hostname"] == "z"


async def test_dry_run_stores_nothing(rest: RestEnv) -> None:
    status, out = await rest.call("POST", PODS, json=pod("a"), params={"dryRun": "All"})
    assert status == 201 and out["metadata"]["name"] == "a"
    assert rest.store.get("Pod", "default", "a") is None
    assert rest.admission.calls == ["create"]
    bad = pod("b")
    bad["spec"]["containers"][0]["image"] = ""
    assert (await rest.call("POST", PODS, json=bad, params={"dryRun": "All"}))[0] == 422
    _, created = await rest.call("POST", PODS, json=pod("a"))
    assert (await rest.call("POST", PODS, json=pod("a"), params={"dryRun": "All"}))[0] == 409
    created["spec"]["hostname"] = "dry"
    _, out = await rest.call("PUT", PODS + "/a", json=created, params={"dryRun": "All"})
    assert out["spec"]["hostname"] == "dry"
    stored = rest.store.get("Pod", "default", "a")
    assert stored is not None and "hostname" not in stored["spec"]


async def test_delete_and_cascade(rest: RestEnv) -> None:
    _, owner = await rest.call("POST", DEPLOYS, json=deployment("web"))
    ref = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "web",
        "uid": owner["metadata"]["uid"],
    }
    child = pod("child")
    child["metadata"]["ownerReferences"] = [ref]
    await rest.call("POST", PODS, json=child)
    await rest.call("POST", PODS, json=pod("loner"))
    status, gone = await rest.call("DELETE", DEPLOYS + "/web")
    assert status == 200 and gone["metadata"]["name"] == "web"
    assert rest.store.get("Pod", "default", "child") is None
    assert rest.store.get("Pod", "default", "loner") is not None
    _, owner = await rest.call("POST", DEPLOYS, json=deployment("web"))
    kept = pod("kept")
    kept["metadata"]["ownerReferences"] = [dict(ref, uid=owner["metadata"]["uid"])]
    await rest.call("POST", PODS, json=kept)
    orphan = {"kind": "DeleteOptions", "propagationPolicy": "Orphan"}
    assert (await rest.call("DELETE", DEPLOYS + "/web", json=orphan))[0] == 200
    left = rest.store.get("Pod", "default", "kept")
    assert left is not None and left["metadata"]["ownerReferences"] == []
    assert (await rest.call("DELETE", DEPLOYS + "/web"))[0] == 404
    await rest.call("POST", "/api/v1/namespaces", json={"metadata": {"name": "default"}})
    status, msg = await rest.call("DELETE", "/api/v1/namespaces/default")
    assert status == 403 and "may not be deleted" in msg["message"]
    await rest.call("POST", "/api/v1/namespaces", json={"metadata": {"name": "tmp"}})
    await rest.call("POST", "/api/v1/namespaces/tmp/pods", json=pod("p"))
    assert (await rest.call("DELETE", "/api/v1/namespaces/tmp"))[0] == 200
    assert rest.store.list("Pod", "tmp") == []


async def test_delete_precondition_and_collection(rest: RestEnv) -> None:
    await rest.call("POST", PODS, json=pod("a"))
    await rest.call("POST", PODS, json=pod("b", app="db"))
    status, _ = await rest.call(
        "DELETE", PODS + "/a", json={"preconditions": {"resourceVersion": "999"}}
    )
    assert status == 409
    status, _ = await rest.call("DELETE", PODS, params={"labelSelector": "app=web"})
    assert status == 200
    assert [p["metadata"]["name"] for p in rest.store.list("Pod")] == ["b"]


async def test_scale_subresource(rest: RestEnv) -> None:
    await rest.call("POST", DEPLOYS, json=deployment("web", 2))
    status, scale = await rest.call("GET", DEPLOYS + "/web/scale")
    assert status == 200 and scale["kind"] == "Scale"
    assert scale["spec"]["replicas"] == 2 and scale["status"]["selector"] == "app=web"
    scale["spec"]["replicas"] = 5
    _, out = await rest.call("PUT", DEPLOYS + "/web/scale", json=scale)
    assert out["spec"]["replicas"] == 5
    _, out = await rest.call(
        "PATCH",
        DEPLOYS + "/web/scale",
        data='{"spec": {"replicas": 1}}',
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert out["spec"]["replicas"] == 1
    stored = rest.store.get("Deployment", "default", "web")
    assert stored is not None and stored["spec"]["replicas"] == 1
    status, _msg = await rest.call("PUT", DEPLOYS + "/web/scale", json={"spec": {"replicas": -1}})
    assert status == 400


async def _watch_lines(
    rest: RestEnv, path: str, params: dict[str, str], count: int
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with rest.http.get(rest.base + path, params={"watch": "true", **params}) as resp:
        assert resp.status == 200
        while len(events) < count:
            line = await asyncio.wait_for(resp.content.readline(), 10)
            if not line:
                break
            events.append(json.loads(line))
    return events


async def test_watch_snapshot_then_live(rest: RestEnv) -> None:
    await rest.call("POST", PODS, json=pod("a"))
    await rest.call("POST", "/api/v1/namespaces/other/pods", json=pod("o"))
    task = asyncio.create_task(_watch_lines(rest, PODS, {}, 3))
    await wait_for(lambda: rest.hub.statistics().subscribers, 10, what="the watch to subscribe")
    await rest.call("POST", PODS, json=pod("b"))
    await rest.call("DELETE", PODS + "/a")
    events = await asyncio.wait_for(task, 10)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("DELETED", "a"),
    ]


async def test_watch_resume_and_timeout(rest: RestEnv) -> None:
    for name in ("a", "b", "c"):
        await rest.call("POST", PODS, json=pod(name))
    events = await _watch_lines(rest, PODS, {"resourceVersion": "1", "timeoutSeconds": "1"}, 10)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "b"),
        ("ADDED", "c"),
    ]


async def test_watch_too_old_is_410_error_event(rest: RestEnv) -> None:
    for i in range(60):  # history is 50 events in the fixture
        await rest.call("POST", PODS, json=pod(f"p{i}"))
    events = await _watch_lines(rest, PODS, {"resourceVersion": "2"}, 5)
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"


async def test_watch_label_selector_transitions(rest: RestEnv) -> None:
    await rest.call("POST", PODS, json=pod("a", app="web"))
    await rest.call("POST", PODS, json=pod("b", app="db"))
    task = asyncio.create_task(_watch_lines(rest, PODS, {"labelSelector": "app=web"}, 3))
    await wait_for(lambda: rest.hub.statistics().subscribers, 10, what="the watch to subscribe")
    hdr = {"Content-Type": "application/merge-patch+json"}
    await rest.call(
        "PATCH", PODS + "/a", data='{"metadata": {"labels": {"app": "db"}}}', headers=hdr
    )
    await rest.call(
        "PATCH", PODS + "/b", data='{"metadata": {"labels": {"app": "web"}}}', headers=hdr
    )
    events = await asyncio.wait_for(task, 10)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"),
        ("DELETED", "a"),
        ("ADDED", "b"),
    ]


async def test_slow_watcher_gets_410(rest: RestEnv) -> None:
    async with rest.http.get(rest.base + PODS, params={"watch": "true"}) as resp:
        await wait_for(lambda: rest.hub.statistics().subscribers, 10, what="the watch to subscribe")
        # The handler drains its queue as fast as the socket allows; write synchronously to the
        # store (no awaits) so the queue (20 events) overflows before the handler runs.
        for i in range(30):
            rest.store.create(pod(f"p{i}"), NOW)
        body = await asyncio.wait_for(resp.content.read(), 10)
    lines = [json.loads(x) for x in body.splitlines()]
    assert lines[-1]["type"] == "ERROR" and lines[-1]["object"]["code"] == 410
    assert "too slow" in lines[-1]["object"]["message"]


async def test_watch_subscription_released_when_client_leaves(rest: RestEnv) -> None:
    async with rest_session(rest.admin) as other:
        resp = await other.get(rest.base + PODS, params={"watch": "true"})
        await wait_for(lambda: rest.hub.statistics().subscribers, 10, what="the watch to subscribe")
        resp.close()  # drop the connection without reading anything
    await wait_for(
        lambda: rest.hub.statistics().subscribers == 0,
        10,
        what="the watch to drop its subscription after the client left",
    )


async def test_watch_bookmarks_carry_the_latest_resource_version(rest: RestEnv) -> None:
    await rest.call("POST", PODS, json=pod("a"))
    params = {"allowWatchBookmarks": "true", "timeoutSeconds": "10"}
    task = asyncio.create_task(_watch_lines(rest, PODS, params, 2))
    await wait_for(lambda: rest.hub.statistics().subscribers, 10, what="the watch to subscribe")
    svc = {"kind": "Service", "metadata": {"name": "s"}, "spec": {}}
    await rest.call("POST", "/api/v1/namespaces/default/services", json=svc)  # not a pod
    events = await asyncio.wait_for(task, 10)
    assert events[0]["type"] == "ADDED"
    assert events[1] == {
        "type": "BOOKMARK",
        "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "2"}},
    }


async def test_openapi_endpoints(rest: RestEnv) -> None:
    status, v2 = await rest.call("GET", "/openapi/v2")
    assert status == 200 and "io.k8s.api.core.v1.Pod" in v2["definitions"]
    proto = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
    async with rest.http.get(rest.base + "/openapi/v2", headers={"Accept": proto}) as resp:
        assert resp.headers["Content-Type"].endswith("spec.v2.v1.0+protobuf")
        assert (await resp.read())[:5] == b"\x0a\x032.0"
    _, disc = await rest.call("GET", "/openapi/v3")
    url = disc["paths"]["apis/apps/v1"]["serverRelativeURL"]
    async with rest.http.get(rest.base + url) as resp:
        assert resp.headers["Cache-Control"] == "public, immutable"
        doc = await resp.json()
    assert "io.k8s.api.apps.v1.Deployment" in doc["components"]["schemas"]
    status, missing = await rest.call("GET", "/openapi/v3/apis/nope/v1")
    assert status == 404 and missing["reason"] == "NotFound"


TABLE = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}


async def test_table_responses_and_categories(rest: RestEnv) -> None:
    await rest.call("POST", PODS, json=pod("a"))
    status, table = await rest.call("GET", PODS, headers=TABLE)
    assert status == 200 and table["kind"] == "Table"
    assert table["metadata"]["resourceVersion"]
    assert [r["cells"][0] for r in table["rows"]] == ["a"]
    _, one = await rest.call("GET", PODS + "/a", headers=TABLE)
    assert one["kind"] == "Table" and len(one["rows"]) == 1
    status, bad = await rest.call("GET", PODS + "?includeObject=All", headers=TABLE)
    assert status == 400 and "includeObject" in bad["message"]
    _, plain = await rest.call("GET", PODS)
    assert plain["kind"] == "PodList"
    _, core = await rest.call("GET", "/api/v1")
    pods = next(r for r in core["resources"] if r["name"] == "pods")
    assert pods["categories"] == ["all"]


async def test_table_watch(rest: RestEnv) -> None:
    await rest.call("POST", PODS, json=pod("a"))
    url = rest.base + PODS + "?watch=true&timeoutSeconds=1"
    async with rest.http.get(url, headers=TABLE) as resp:
        first = json.loads(await resp.content.readline())
    assert first["type"] == "ADDED" and first["object"]["kind"] == "Table"
    assert first["object"]["rows"][0]["cells"][0] == "a"


async def test_reviews_are_answered_not_stored(rest: RestEnv) -> None:
    path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    review = {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
              "spec": {"resourceAttributes": {"verb": "delete", "resource": "pods"}}}  # fmt: skip
    status, body = await rest.call("POST", path, json=review)
    assert status == 201 and body["status"]["allowed"] is True
    assert "system:masters" in body["status"]["reason"]
    status, bad = await rest.call("POST", path, json={**review, "spec": {}})
    assert status == 422 and bad["details"]["causes"][0]["field"] == "spec"
    assert (await rest.call("GET", path))[0] == 405
    _, who = await rest.call("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                             json={"kind": "SelfSubjectReview"})  # fmt: skip
    assert who["status"]["userInfo"]["username"] == "kubernetes-admin"
    _, rules = await rest.call("POST", "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
                               json={"spec": {"namespace": "default"}})  # fmt: skip
    assert rules["status"]["resourceRules"][0]["verbs"] == ["*"]
    _, authz = await rest.call("GET", "/apis/authorization.k8s.io/v1")
    assert {r["name"]: r["verbs"] for r in authz["resources"]}["selfsubjectaccessreviews"] == [
        "create"
    ]
