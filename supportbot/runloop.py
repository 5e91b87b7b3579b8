"""The event loop `supportbot` runs on: uvloop where it is installed (Linux, macOS), else asyncio's own.

uvloop makes each loop turn, future and thread hand-off cheaper; the desk makes a great many of
those (every SQLite statement is one trip to aiosqlite's thread and back). `bench/ingest.py`
measured about 20% more mails per second with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # Windows, or a build without it: the standard loop works the same, slower
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
