"""Pulls from a registry: a tiny OCI distribution registry (knemu.testing_registry) on
loopback in the test's own network namespace, a node configured to pull from it, and
imagePullPolicy as the kubelet honours it.  Needs root, runc, skopeo, umoci, busybox-static.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from knemu.node_agent.runtime.image_store import ImageStore
from knemu.proto import knemu_pb2 as pb
from knemu.testing import free_port
from knemu.testing_images import WEB_REF, build_test_images
from knemu.testing_registry import LayoutRegistry, serve_layout

from .conftest import make_harness
from .pods_helpers import Harness

pytestmark = [pytest.mark.netns]


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OCI layout holding the web test image as knemu/web:v1."""
    for tool in ("runc", "skopeo", "umoci"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: apt-get install runc skopeo umoci")
    work = tmp_path_factory.mktemp("registry")
    archive = build_test_images(work / "archives")[WEB_REF]
    store = ImageStore(work / "store")
    asyncio.run(store.import_archive(archive))
    out = work / "layout"
    subprocess.run(
        ["skopeo", "copy", "--quiet", f"oci:{store.layout}:knemu.test/web:v1",
         f"oci:{out}:knemu/web:v1"], check=True, timeout=120,
    )  # fmt: skip
    return out


@pytest.fixture
async def registry(layout: Path) -> AsyncIterator[tuple[LayoutRegistry, str]]:
    port = free_port()
    async with serve_layout(layout, "127.0.0.1", port) as reg:
        yield reg, f"127.0.0.1:{port}"


@pytest.fixture
async def node(tmp_path: Path, registry: tuple[LayoutRegistry, str]) -> AsyncIterator[Harness]:
    async with make_harness(tmp_path, registries=registry[1]) as h:
        yield h


def _reasons(h: Harness, key: str) -> list[str]:
    return [e[2] for e in h.events if e[0] == key]


def _manifest_gets(reg: LayoutRegistry) -> int:
    return sum(r.startswith("GET /v2/knemu/web/manifests/") for r in reg.requests)


async def test_pull_if_not_present_then_always(
    node: Harness, registry: tuple[LayoutRegistry, str]
) -> None:
    reg, host = registry
    image = f"{host}/knemu/web:v1"
    web = pb.Container(name="web", image=image, image_pull_policy="IfNotPresent")
    h1 = await node.rt.start_pod(node.pod("first", web))
    await node.wait_status(h1.key, lambda s: s.container_statuses[0].state == "running", 60)
    assert [r for r in _reasons(node, h1.key) if r.startswith("Pull")] == ["Pulling", "Pulled"]
    proc = await node.rt.exec(h1.key, "web", ["cat", "/etc/os-release"], stdin=False)
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert b'NAME="knemu test image"' in out  # the pulled image's root filesystem
    pulls = _manifest_gets(reg)
    assert pulls >= 1

    # IfNotPresent: in the store now, no second pull; Always: pulled at every start.
    h2 = await node.rt.start_pod(node.pod("second", web))
    await node.wait_status(h2.key, lambda s: s.container_statuses[0].state == "running", 60)
    assert "Pulling" not in _reasons(node, h2.key) and _manifest_gets(reg) == pulls
    always = pb.Container(name="web", image=image, image_pull_policy="Always")
    h3 = await node.rt.start_pod(node.pod("third", always))
    await node.wait_status(h3.key, lambda s: s.container_statuses[0].state == "running", 60)
    assert "Pulled" in _reasons(node, h3.key) and _manifest_gets(reg) > pulls


async def test_what_cannot_be_pulled(node: Harness, registry: tuple[LayoutRegistry, str]) -> None:
    reg, host = registry
    missing = pb.Container(name="c", image=f"{host}/knemu/web:v9")
    h = await node.rt.start_pod(node.pod("missing-tag", missing))
    s = await node.wait_status(h.key, lambda s: s.container_statuses[0].reason == "ErrImagePull")
    assert f'Failed to pull image "{host}/knemu/web:v9"' in s.container_statuses[0].message
    never = pb.Container(name="c", image=f"{host}/knemu/web:v1", image_pull_policy="Never")
    h = await node.rt.start_pod(node.pod("never", never))
    await node.wait_status(h.key, lambda s: s.container_statuses[0].reason == "ErrImageNeverPull")
    # A registry the node was not told about is never contacted.
    before = len(reg.requests)
    other = pb.Container(name="c", image=f"127.0.0.1:{free_port()}/knemu/web:v1")
    h = await node.rt.start_pod(node.pod("unlisted", other))
    s = await node.wait_status(h.key, lambda s: s.container_statuses[0].reason == "ErrImagePull")
    assert "pulls from no registry of it" in s.container_statuses[0].message
    assert "Pulling" not in _reasons(node, h.key) and len(reg.requests) == before
