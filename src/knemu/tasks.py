"""Small asyncio helpers every component uses."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


async def until_first_done(*named: tuple[str, Coroutine[Any, Any, None]]) -> None:
    """Run the (name, coroutine) pairs until one of them finishes, then cancel the others and
    wait for them: a two-way relay ends as soon as either direction does."""
    tasks = {asyncio.create_task(coro, name=name) for name, coro in named}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
