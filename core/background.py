"""The one background task of a long-running part: start it, ask it to stop, wait for its round."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class Background:
    """`start` runs a loop that watches `stopping`; `stop` sets it and waits for the loop to end."""

    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self, loop: Coroutine[Any, Any, None], name: str) -> None:
        self.stopping.clear()
        self._task = asyncio.create_task(loop, name=name)

    async def stop(self) -> None:
        self.stopping.set()
        if self._task is not None:
            await self._task  # let the round in flight finish: no work is cut in half
            self._task = None


async def nap(seconds: float, *flags: asyncio.Event) -> None:
    """Sleep up to `seconds`, waking early as soon as any flag is set."""
    waiters = {asyncio.ensure_future(flag.wait()) for flag in flags}
    try:
        await asyncio.wait(waiters, timeout=max(seconds, 0.0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
