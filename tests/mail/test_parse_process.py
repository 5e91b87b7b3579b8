"""Parsing in a process of its own: the same results as in this process, and a runaway parse is ended."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator

import pytest

from core.errors import UserError
from mail_gateway.parse_process import ParseProcess
from mail_gateway.parsing import parse_mail
from tests.mail.pipeline_support import FIXTURES

RAWS = [path.read_bytes() for path in sorted(FIXTURES.glob("*.eml"))]


@pytest.fixture
async def parser() -> AsyncIterator[ParseProcess]:
    process = ParseProcess(max_attachment_bytes=1_000_000, timeout_seconds=30)
    yield process
    await process.stop()


async def test_a_batch_parsed_there_equals_parsing_here(parser: ParseProcess) -> None:
    results = await parser.parse_many(RAWS)
    assert len(results) == len(RAWS) > 10
    assert results == [parse_mail(raw, max_attachment_bytes=1_000_000) for raw in RAWS]
    assert parser.pid is not None and parser.pid != os.getpid()


async def test_a_batch_over_its_budget_ends_the_process_and_names_each_mail_that_ran_out(
        parser: ParseProcess) -> None:
    await parser.parse_many(RAWS[:1])  # the process is up
    first = parser.pid
    parser.timeout_seconds = 0.000001  # no mail parses this fast: every one runs out
    results = await parser.parse_many(RAWS[:2])
    assert all(isinstance(r, UserError) and "parsing took longer than" in str(r) for r in results)
    parser.timeout_seconds = 30
    again = await parser.parse_many(RAWS[:1])  # a fresh process took over
    assert again == [parse_mail(RAWS[0], max_attachment_bytes=1_000_000)]
    assert parser.pid not in (None, first)


async def test_a_parsing_process_that_died_is_replaced_by_the_next_batch(parser: ParseProcess) -> None:
    await parser.parse_many(RAWS[:1])
    dead = parser.pid
    assert dead is not None
    os.kill(dead, signal.SIGKILL)
    assert parser._process is not None
    await parser._process.wait()
    assert await parser.parse_many(RAWS[:2]) == [parse_mail(r, max_attachment_bytes=1_000_000) for r in RAWS[:2]]
    assert parser.pid not in (None, dead)


def test_the_parse_process_does_not_load_the_database_layer() -> None:
    """Its memory is the budget's: importing SQLAlchemy and the models there cost 37 MiB per worker."""
    import subprocess
    import sys

    probe = ("import sys, mail_gateway.parse_worker; "
             "print(sorted(m for m in ('sqlalchemy', 'core.models') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
