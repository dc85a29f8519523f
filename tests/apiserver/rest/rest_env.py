"""Helpers for the REST tests: a fake admission, a REST environment, a fake agent's objects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp

from knemu.apiserver.storage.store import Store
from knemu.apiserver.storage.watch_hub import WatchHub
from knemu.errors import FieldError, Invalid
from knemu.pki import Credentials

NOW = 1_700_000_000.0
SUCCESS = b'\x03{"status":"Success"}'
# A websocket upgrade request made by hand, so a refused upgrade's JSON body can be read.
UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


class FakeAdmission:
    """Admission that only checks one rule, so REST tests do not depend on the real policy."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def _check(self, obj: dict[str, Any]) -> dict[str, Any]:
        if obj["metadata"].get("name") == "kt-bug":
            raise RuntimeError("simulated bug")
        for i, c in enumerate(obj.get("spec", {}).get("containers", [])):
            if not c.get("image"):
                name = obj["metadata"].get("name", "")
                cause = FieldError(f"spec.containers[{i}].image", "Required value")
                raise Invalid("Pod", name, [cause])
        return obj

    def admit_create(self, obj: dict[str, Any], now: float) -> dict[str, Any]:
        self.calls.append("create")
        return self._check(obj)

    def admit_update(self, old: dict[str, Any], new: dict[str, Any], now: float) -> dict[str, Any]:
        self.calls.append("update")
        return self._check(new)


@dataclass
class RestEnv:
    base: str
    store: Store
    hub: WatchHub
    admission: FakeAdmission
    http: aiohttp.ClientSession
    admin: Credentials

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, **kw) as resp:
            text = await resp.text()
            ctype = resp.headers.get("Content-Type", "")
            return resp.status, (await resp.json()) if "json" in ctype else text


def node(name: str, port: int, ip: str = "127.0.0.1") -> dict[str, Any]:
    return {
        "kind": "Node",
        "metadata": {"name": name},
        "status": {
            "addresses": [
                {"type": "Hostname", "address": name},
                {"type": "InternalIP", "address": ip},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        },
    }


def pod(name: str, node_name: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": "main", "image": "tools"}, {"name": "side", "image": "x"}]
    }
    if node_name:
        spec["nodeName"] = node_name
    return {"kind": "Pod", "metadata": {"name": name, "namespace": "default"}, "spec": spec}
