"""Waiting in tests: poll a probe until what it returns is good enough, and say what was last seen.

    rows = await eventually(lambda: stored(desk), until=lambda rows: len(rows) == 2)
    await eventually(lambda: source.state, until=lambda state: state == "idle")
    body = wait_until(lambda: urlopen(url).read(), ignoring=(OSError,), timeout=30)

The probe may be a plain function or return an awaitable. Without `until` a truthy value ends the
wait. The value that ended it is returned, so a test can go on asserting on it. When the time is up
the test fails with the probe's last value (or the last exception it was allowed to raise), passed
through `show` if given, which usually tells why at a glance. So probe for the state itself (rows,
a mailbox, a log) rather than for a bool, and let `until` judge it. A timeout is a bound for a
broken test, not a speed requirement.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import pytest

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
DEFAULT_INTERVAL = 0.05
_SHOWN = 1500  # characters of the last value in a failure message


async def eventually(probe: Callable[[], Awaitable[T] | T], until: Callable[[T], object] = bool, *,
                     timeout: float = DEFAULT_TIMEOUT, interval: float = DEFAULT_INTERVAL,
                     ignoring: tuple[type[BaseException], ...] = (), what: str = "",
                     show: Callable[[T], object] | None = None) -> T:
    """Await `probe()` every `interval` seconds until `until(value)` holds; return that value."""
    deadline = time.monotonic() + timeout
    attempts = 0
    while True:
        attempts += 1
        try:
            value = probe()
            if inspect.isawaitable(value):
                value = await value
        except ignoring as e:
            last: object = e
        else:
            if until(value):  # type: ignore[arg-type]
                return value  # type: ignore[return-value]
            last = value if show is None else show(value)  # type: ignore[arg-type]
        if time.monotonic() >= deadline:
            _give_up(probe, what, timeout, attempts, last)
        await asyncio.sleep(interval)


def wait_until(probe: Callable[[], T], until: Callable[[T], object] = bool, *,
               timeout: float = DEFAULT_TIMEOUT, interval: float = DEFAULT_INTERVAL,
               ignoring: tuple[type[BaseException], ...] = (), what: str = "",
               show: Callable[[T], object] | None = None) -> T:
    """`eventually` for code without an event loop (blocks the calling thread between probes)."""
    deadline = time.monotonic() + timeout
    attempts = 0
    while True:
        attempts += 1
        try:
            value = probe()
        except ignoring as e:
            last: object = e
        else:
            if until(value):
                return value
            last = value if show is None else show(value)
        if time.monotonic() >= deadline:
            _give_up(probe, what, timeout, attempts, last)
        time.sleep(interval)


def _give_up(probe: Callable[..., Any], what: str, timeout: float, attempts: int,
             last: object) -> NoReturn:
    shown = repr(last)
    if len(shown) > _SHOWN:  # the start says what it is, the end what happened last (a log's tail)
        shown = f"{shown[:_SHOWN // 4]} ...[{len(shown) - _SHOWN} characters]... {shown[-_SHOWN * 3 // 4:]}"
    pytest.fail(f"{what or _describe(probe)}: still not so after {timeout:g} s ({attempts} tries); "
                f"last seen: {shown}")


def _describe(probe: Callable[..., Any]) -> str:
    """A lambda by the line it is written on, anything else by its name."""
    name = getattr(probe, "__qualname__", repr(probe))
    if name.endswith("<lambda>"):
        try:
            return inspect.getsource(probe).strip().splitlines()[0]
        except (OSError, TypeError, IndexError):
            return "a lambda"
    return name
