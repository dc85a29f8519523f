"""The web console's server side: assets, the live feed, the guards on its actions, summaries.

The whole api-server runs in-process with fake nodes (loopback addresses where no agent
listens, so every agent call fails fast and stays on this machine).  The page itself is driven
in a real browser by tests/apiserver/console/test_console_browser.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from knemu.apiserver.console import model
from knemu.apiserver.console.actions import resolve_destination
from knemu.apiserver.console.routes import static_file
from knemu.apiserver.storage.store import Store
from knemu.errors import LocalError, NotFound
from knemu.pki import Credentials
from knemu.testing import apiserver_inprocess, fake_cluster, rest_session

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Any]:
    async with apiserver_inprocess(tmp_path) as server, fake_cluster(server, nodes=2):
        yield server


async def read_events(
    resp: aiohttp.ClientResponse, until: str, kind: str | None = None
) -> list[dict[str, Any]]:
    """Feed messages up to and including the first of type ``until`` (and ``kind``, if given:
    other objects' changes, a Lease renewed or an Event recorded, may come first)."""
    out = []
    async for raw in resp.content:
        line = raw.decode().strip()
        if line.startswith("data: "):
            out.append(json.loads(line[6:]))
            if out[-1]["type"] == until and kind in (None, out[-1].get("kind")):
                return out
    raise AssertionError(f"the feed ended before {until}: {out}")


async def test_the_console_needs_a_sign_in_and_keeps_it_in_a_strict_cookie(api: Any) -> None:
    anonymous = Credentials(api.rest_url, api.admin.ca_pem)
    jar = aiohttp.CookieJar(unsafe=True)  # unsafe: keep cookies of an IP-address host
    async with rest_session(anonymous, cookie_jar=jar) as http:
        async with http.get(api.rest_url + "/console/", allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/console/login"
        async with http.get(api.rest_url + "/console/login") as resp:
            assert resp.status == 200 and "login.js" in await resp.text()
        async with http.get(api.rest_url + "/console/static/login.js") as resp:
            assert resp.status == 200
        async with http.get(api.rest_url + "/console/api/events") as resp:
            assert resp.status == 401 and (await resp.json())["reason"] == "Unauthorized"
        async with http.post(api.rest_url + "/console/login", json={"token": "wrong"}) as resp:
            assert resp.status == 401
        evil = {"Origin": "https://elsewhere.example"}
        login = {"token": api.admin.token}
        async with http.post(api.rest_url + "/console/login", json=login, headers=evil) as resp:
            assert resp.status == 403
        async with http.post(api.rest_url + "/console/login", json=login) as resp:
            assert resp.status == 200 and (await resp.json())["user"] == "kubernetes-admin"
            cookie = resp.headers["Set-Cookie"]
        for attribute in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/"):
            assert attribute in cookie
        # the session now reaches the page, its feed and the REST API the page reads
        async with http.get(api.rest_url + "/console/", allow_redirects=False) as resp:
            assert resp.status == 200 and "console.js" in await resp.text()
        async with http.get(api.rest_url + "/api/v1/namespaces/default/services") as resp:
            assert resp.status == 200
        async with http.post(api.rest_url + "/console/logout", json={}) as resp:
            assert resp.status == 200
        async with http.get(api.rest_url + "/console/", allow_redirects=False) as resp:
            assert resp.status == 302


async def test_page_and_assets_are_served_with_a_strict_policy(api: Any) -> None:
    async with rest_session(api.admin) as http:
        async with http.get(api.rest_url + "/console", allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/console/"
        async with http.get(api.rest_url + "/console/") as resp:
            assert resp.status == 200 and resp.content_type == "text/html"
            assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
            page = await resp.text()
        assert '<script src="/console/static/console.js"' in page and "http" not in page.replace(
            "http://www.w3.org/2000/svg", ""
        ), "no external resources (no CDN)"
        for name in ("console.js", "console.css", "tours.json"):
            async with http.get(f"{api.rest_url}/console/static/{name}") as resp:
                assert resp.status == 200, name
        for bad in ("model.py", "..%2Froutes.py", "%2e%2e%2fagents.py", "index.html%00.js"):
            async with http.get(f"{api.rest_url}/console/static/{bad}") as resp:
                assert resp.status == 404, bad


def test_static_names_never_leave_the_static_directory() -> None:
    assert static_file("console.js") is not None
    for name in ("../routes.py", "..", ".hidden.js", "a/b.js", "routes.py", "x" * 70 + ".js"):
        assert static_file(name) is None, name


async def test_feed_sends_a_snapshot_then_live_changes(api: Any) -> None:
    async with (
        rest_session(api.admin) as http,
        http.get(api.rest_url + "/console/api/events") as resp,
    ):
        assert resp.content_type == "text/event-stream"
        snapshot = await read_events(resp, "SYNCED")
        assert snapshot[0]["type"] == "RESET"
        nodes = {m["object"]["name"]: m["object"] for m in snapshot if m.get("kind") == "Node"}
        assert set(nodes) == {"node-1", "node-2"}
        assert nodes["node-1"]["podCIDR"] and nodes["node-1"]["vtepMAC"].startswith("02:")
        svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}  # fmt: skip
        async with http.post(api.rest_url + "/api/v1/namespaces/default/services",
                             json=svc) as created:  # fmt: skip
            assert created.status == 201
        live = await asyncio.wait_for(read_events(resp, "ADDED", "Service"), 30)
        added = [m for m in live if m.get("kind") == "Service"]
        assert added and added[-1]["object"]["name"] == "web"
        assert added[-1]["object"]["clusterIP"].startswith("10.")


@pytest.mark.parametrize(
    ("headers", "body", "status", "message"),
    [
        ({"Content-Type": "text/plain"}, "{}", 403, "JSON body"),
        ({"Content-Type": "application/json", "Origin": "http://evil.example"}, "{}", 403,
         "not from http://evil.example"),
        ({"Content-Type": "application/json"}, "[1]", 400, "JSON object"),
        ({"Content-Type": "application/json"}, '{"action": "explode", "node": "node-1"}', 400,
         "action 'explode'"),
        ({"Content-Type": "application/json"}, '{"action": "start", "node": "node-1"}', 501,
         "knemu chaos start-node node-1"),
        ({"Content-Type": "application/json"}, '{"action": "kill", "node": "node-9"}', 404,
         'node "node-9" not found'),
        ({"Content-Type": "application/json"}, '{"action": "loss", "node": "node-1"}', 400,
         "value must be a number"),
        ({"Content-Type": "application/json"}, '{"action": "kill", "node": "node-1"}', 503,
         "unreachable"),
    ],
)  # fmt: skip
async def test_chaos_requests_are_checked_and_errors_say_why(
    api: Any, headers: dict[str, str], body: str, status: int, message: str
) -> None:
    async with (
        rest_session(api.admin) as http,
        http.post(api.rest_url + "/console/api/chaos", data=body, headers=headers) as resp,
    ):
        reply = await resp.json()
    assert resp.status == status, reply
    assert message in reply["message"]


async def test_heal_reports_each_unreachable_node(api: Any) -> None:
    async with (
        rest_session(api.admin) as http,
        http.post(api.rest_url + "/console/api/chaos", json={"action": "heal"}) as resp,
    ):
        reply = await resp.json()
    assert resp.status == 200
    assert [line.split(":")[0] for line in reply["lines"]] == ["node-1", "node-2"]
    assert all("not healed" in line for line in reply["lines"])


async def test_flows_of_unreachable_nodes_are_error_lines(api: Any) -> None:
    async with rest_session(api.admin) as http:
        async with http.get(api.rest_url + "/console/api/flows") as resp:
            assert resp.status == 400
        url = api.rest_url + "/console/api/flows?node=node-1&node=node-2"
        async with http.get(url) as resp:
            assert resp.content_type == "application/x-ndjson"
            errors = [json.loads(await resp.content.readline()) for _ in range(2)]
    assert sorted(e["error"].split(":")[0] for e in errors) == [
        "flows from node-1",
        "flows from node-2",
    ]


async def test_trace_names_a_missing_source_or_destination(api: Any) -> None:
    async with rest_session(api.admin) as http:
        body = {"source": "default/ghost", "destination": "svc/web", "port": 80}
        async with http.post(api.rest_url + "/console/api/trace", json=body) as resp:
            assert resp.status == 404
            assert 'source pod "default/ghost" not found' in (await resp.json())["message"]


def test_summaries_carry_what_the_map_draws() -> None:
    node = {"metadata": {"name": "node-1", "annotations": {model.BACKEND_DATA:
            '{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}'}},
            "spec": {"podCIDR": "10.244.1.0/24"},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.59.11"}],
                       "conditions": [{"type": "Ready", "status": "False"}]}}  # fmt: skip
    assert model.node_summary(node) == {
        "name": "node-1", "internalIP": "192.168.59.11", "podCIDR": "10.244.1.0/24",
        "vtepMAC": "02:00:00:00:00:01", "ready": "False", "unschedulable": False,
    }  # fmt: skip
    eps = {"metadata": {"name": "web-abc", "namespace": "default",
                        "labels": {model.SERVICE_NAME_LABEL: "web"}},
           "endpoints": [{"addresses": ["10.244.1.5"], "nodeName": "node-1",
                          "conditions": {"ready": False},
                          "targetRef": {"kind": "Pod", "name": "web-1"}}],
           "ports": [{"name": "http", "port": 80}]}  # fmt: skip
    summary = model.slice_summary(eps)
    assert summary["service"] == "web"
    assert summary["endpoints"] == [
        {"ip": "10.244.1.5", "pod": "web-1", "node": "node-1", "ready": False}
    ]
    assert model.feed_message("DELETED", "Pod", {"metadata": {"name": "x", "namespace": "d"}}) == {
        "type": "DELETED",
        "kind": "Pod",
        "object": {"namespace": "d", "name": "x"},
    }
    bad = {"metadata": {"name": "n", "annotations": {model.BACKEND_DATA: "not json"}}}
    assert model.node_summary(bad)["vtepMAC"] == ""


def examples(files: list[str]) -> list[Any]:
    docs = [yaml.safe_load_all((REPO / "examples" / name).read_text()) for name in files]
    return [doc for stream in docs for doc in stream if doc]


def test_tours_apply_the_examples_unchanged() -> None:
    found = static_file("tours.json")
    assert found is not None
    tours = {t["id"]: t for t in json.loads(found[0])}
    assert tours["seed-003"]["sources"] == ["sample-deployment.yaml", "sample-clusterip.yaml"]
    for tour in tours.values():
        assert tour["objects"] == examples(tour["sources"]), tour["id"]
        for step in tour["steps"]:
            assert step.get("apply", []) == examples(step.get("sources", [])), step["text"]


@pytest.mark.parametrize(
    ("dst", "expected"),
    [
        ("10.96.0.20", ("10.96.0.20", "address")),
        ("pod/api", ("10.244.2.7", "pod web/api")),
        ("svc/front", ("10.96.0.20", "service web/front")),
        ("front", ("10.96.0.20", "service web/front")),
        ("front.web", ("10.96.0.20", "service web/front")),
        ("front.web.svc", ("10.96.0.20", "service web/front")),
        ("dns.kube-system.svc.cluster.local", ("10.96.0.10", "service kube-system/dns")),
    ],
)
def test_trace_destinations_resolve_as_knemu_trace_does(
    dst: str, expected: tuple[str, str]
) -> None:
    store = Store(":memory:", event_history=10)
    store.create({"kind": "Pod", "metadata": {"name": "api", "namespace": "web"},
                  "status": {"podIP": "10.244.2.7"}}, 0.0)  # fmt: skip
    for ns, name, ip in (("web", "front", "10.96.0.20"), ("kube-system", "dns", "10.96.0.10"),
                         ("web", "headless", "None")):  # fmt: skip
        store.create({"kind": "Service", "metadata": {"name": name, "namespace": ns},
                      "spec": {"clusterIP": ip}}, 0.0)  # fmt: skip
    assert resolve_destination(store, "web", dst) == expected
    with pytest.raises(LocalError, match="headless"):
        resolve_destination(store, "web", "svc/headless")
    with pytest.raises(NotFound, match='service "nope" not found'):
        resolve_destination(store, "web", "nope")
    with pytest.raises(LocalError, match="use an IPv4 address"):
        resolve_destination(store, "web", "deploy/front")
    store.close()
