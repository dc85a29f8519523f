"""`knemu image load -i / ls / import` against the stores of a local cluster's nodes.

Uses a cluster state file without processes (the stores are plain directories) and the offline
test images; needs skopeo and umoci (Debian packages), not root."""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import tarfile
from pathlib import Path

import pytest

from knemu.cli import main
from knemu.node_agent.runtime.image_store import ImageStore
from knemu.testing_images import CRASHER_REF, WEB_REF, build_test_images


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_test_images(tmp_path_factory.mktemp("images"))


@pytest.fixture
def state_root(tmp_path: Path) -> Path:
    cluster = tmp_path / "cluster-kimg"
    for node in ("node-1", "node-2"):
        (cluster / node).mkdir(parents=True)
    (cluster / "state.json").write_text(json.dumps({"pids": {"node-1": 1, "node-2": 2,
                                                             "apiserver": 3}}))  # fmt: skip
    return tmp_path


def knemu(state_root: Path, *args: str) -> int:
    return main(["image", "--cluster", "kimg", "--state-dir", str(state_root), *args])


def test_load_archives_into_chosen_nodes_and_list_them(
    state_root: Path, archives: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert knemu(state_root, "--nodes", "node-2", "load", "-i", str(archives[WEB_REF])) == 0
    assert capsys.readouterr().out.strip() == f"node-2: loaded {WEB_REF}"
    assert knemu(state_root, "load", "-i", str(archives[CRASHER_REF])) == 0
    assert knemu(state_root, "ls") == 0
    rows = [line.split()[:2] for line in capsys.readouterr().out.splitlines()[3:]]
    assert rows == [["node-1", CRASHER_REF], ["node-2", CRASHER_REF], ["node-2", WEB_REF]]
    assert knemu(state_root, "ls", "-o", "json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert {(r["node"], r["ref"]) for r in listed} == {
        ("node-1", CRASHER_REF), ("node-2", CRASHER_REF), ("node-2", WEB_REF)}  # fmt: skip


def test_oci_archives_load_too(state_root: Path, archives: dict[str, Path], tmp_path: Path) -> None:
    oci = tmp_path / "web-oci.tar"
    subprocess.run(["skopeo", "copy", "--quiet", f"docker-archive:{archives[WEB_REF]}",
                    f"oci-archive:{oci}:{WEB_REF}"], check=True)  # fmt: skip
    assert knemu(state_root, "load", "-i", str(oci)) == 0
    store = ImageStore(state_root / "cluster-kimg" / "node-1" / "images")
    found = store.lookup(WEB_REF)
    assert found is not None and store.config(found).entrypoint == ("/app/web.sh",)


def test_bad_input_is_named(
    state_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert knemu(state_root, "--nodes", "node-9", "load", "-i", "x.tar") == 1
    assert "no node node-9" in capsys.readouterr().err
    assert knemu(state_root, "load", "-i", str(tmp_path / "missing.tar")) == 1
    assert "cannot read image archive" in capsys.readouterr().err
    junk = tmp_path / "junk.tar"
    with tarfile.open(junk, "w") as tar:
        tar.add(__file__, arcname="hello.txt")
    assert knemu(state_root, "load", "-i", str(junk)) == 1
    assert "neither a `docker save` archive" in capsys.readouterr().err
    assert main(["image", "--cluster", "nope", "--state-dir", str(tmp_path), "--runtime",
                 "local", "ls"]) == 1  # fmt: skip
    assert "no local cluster 'nope'" in capsys.readouterr().err


def test_load_from_the_docker_engine(
    state_root: Path, archives: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`knemu image load NAME`: docker SDK save, as kind does (an image name of its own, so
    nothing else using this Docker engine is touched)."""
    docker = pytest.importorskip("docker")
    try:
        engine = docker.from_env()
        engine.ping()
    except Exception as exc:
        pytest.skip(f"no Docker engine: {exc}")
    name = f"knemu.test/docker-load:{secrets.token_hex(4)}"
    (image,) = engine.images.load(archives[WEB_REF].read_bytes())
    try:
        image.tag(name)
        engine.images.remove(WEB_REF)  # only our own tag remains
        assert knemu(state_root, "load", name) == 0
        assert capsys.readouterr().out.splitlines() == [
            f"node-1: loaded {name}", f"node-2: loaded {name}"]  # fmt: skip
        store = ImageStore(state_root / "cluster-kimg" / "node-2" / "images")
        found = store.lookup(name)
        assert found is not None and store.config(found).entrypoint == ("/app/web.sh",)
    finally:
        for tag in (name, WEB_REF):
            with contextlib.suppress(docker.errors.ImageNotFound):
                engine.images.remove(tag)
