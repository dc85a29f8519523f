"""Helpers for the api-server tests: a fake admission and a REST environment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp

from knemu.apiserver.storage.store import Store
from knemu.apiserver.storage.watch_hub import WatchHub
from knemu.errors import FieldError, Invalid

NOW = 1_700_000_000.0


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

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, **kw) as resp:
            text = await resp.text()
            ctype = resp.headers.get("Content-Type", "")
            return resp.status, (await resp.json()) if "json" in ctype else text
