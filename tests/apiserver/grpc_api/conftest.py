"""Fixtures for tests/grpc (helpers live in grpc_stack.py, importable by the tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .stack import Stack, close_stack, make_stack


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    s = await make_stack(tmp_path)
    try:
        yield s
    finally:
        await close_stack(s)
