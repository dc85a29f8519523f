"""Project-level checks: seed manifests unchanged, generated code current, layering."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT.parent / "shared" / "seeds"
SEED_003_FILES = (
    "sample-deployment.yaml",
    "sample-clusterip.yaml",
    "sample-clusterip-multi.yaml",
    "sample-named-port-pods.yaml",
    "sample-named-port-service.yaml",
)


def manifest_from_seed(text: str, filename: str) -> str:
    """The YAML block that follows ``filename`` in the article, as the article prints it."""
    lines = text.split("\n")
    start = lines.index(filename) + 1
    body: list[str] = []
    for line in lines[start:]:
        if not line and not body:
            continue
        if not line or not (line.startswith((" ", "-")) or (line[:1].isascii() and ":" in line)):
            break
        body.append(line)
    return "\n".join(body) + "\n"


@pytest.mark.skipif(not SEEDS.exists(), reason="shared/seeds is not beside this checkout")
@pytest.mark.parametrize("filename", SEED_003_FILES)
def test_examples_are_the_seed_manifests_byte_for_byte(filename: str) -> None:
    seed = (SEEDS / "003_e0ec71b2c58d8b0e.txt").read_text(encoding="utf-8")
    assert (ROOT / "examples" / filename).read_text(encoding="utf-8") == manifest_from_seed(
        seed, filename
    )


def test_generated_protobuf_code_is_current() -> None:
    # The script runs `python -m grpc_tools.protoc`: the interpreter running these tests.
    path = os.pathsep.join((os.path.dirname(sys.executable), os.environ.get("PATH", "")))
    proc = subprocess.run(
        [str(ROOT / "scripts" / "gen-proto"), "--check"],
        capture_output=True, text=True, env={**os.environ, "PATH": path},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(shutil.which("lint-imports") is None, reason="import-linter not installed")
def test_layers_cli_above_components_above_proto() -> None:
    proc = subprocess.run(["lint-imports"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
