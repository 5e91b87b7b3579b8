"""Benchmark of the SLA scheduler: finding and firing due timers among 100,000 open tickets, and its memory.

Run `python -m bench.sla --help`. Prints figures; asserts nothing (tests check behaviour).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from bench._util import peak_rss_mib, print_table, reset_peak_rss, rss_mib, timer
from core.attachments import AttachmentStore
from core.db import Database
from core.desk import CoreSettings, Desk
from core.enums import Priority
from core.events import advance_cursor
from core.migrate import upgrade
from core.models import Contact, Event, Ticket
from core.sla.clocks import CONSUMER
from core.sla.policy import SlaPolicy, SlaSettings
from core.sla.scheduler import SlaScheduler
from core.sla_models import ClockState, SlaClock, SlaTimer, TimerAction

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
POLICY = SlaPolicy(first_response=timedelta(hours=4), next_response=timedelta(hours=2),
                   resolution=timedelta(hours=24), business_hours=False)
CHUNK = 5_000


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.sla",
        description="Fills a database with open tickets, each with a running first-response and resolution "
                    "clock and their four armed timers (bulk-inserted), of which --due are due now. Measures: "
                    "the scheduler's 'when is the next timer' query, reading the due timers, claiming and "
                    "firing them (each fire appends an SlaBreached event), and the process's memory. The "
                    "same is measured on --baseline tickets first, so the effect of table size shows.",
        epilog="Example: python -m bench.sla --tickets 100000 --due 1000")
    p.add_argument("--tickets", type=int, default=100_000, help="open tickets (default: %(default)s)")
    p.add_argument("--baseline", type=int, default=1_000, help="tickets in the small run (default: %(default)s)")
    p.add_argument("--due", type=int, default=1_000, help="timers due now (default: %(default)s)")
    p.add_argument("--batch", type=int, default=200, help="timers claimed per transaction (default: %(default)s)")
    p.add_argument("--postgres", metavar="URL",
                   help="also measure PostgreSQL: a server URL whose user may CREATE DATABASE")
    return p.parse_args(argv)


async def fill(db: Database, tickets: int, due: int) -> None:
    """Tickets with clocks and timers, inserted in bulk (the services would take far longer)."""
    async with db.engine.begin() as conn:
        await conn.execute(insert(Contact), [{"id": 1, "email": "bench@example.com", "name": "", "blocked": False,
                                             "created_at": NOW}])
        for start in range(0, tickets, CHUNK):
            ids = range(start + 1, min(tickets, start + CHUNK) + 1)
            await conn.execute(insert(Ticket), [_ticket(i, due) for i in ids])
            await conn.execute(insert(SlaClock), [c for i in ids for c in _clocks(i, due)])
            await conn.execute(insert(SlaTimer), [t for i in ids for t in _timers(i, due)])
    async with db.transaction() as session:  # the consumer has nothing to catch up on
        await advance_cursor(session, CONSUMER, 0, NOW)


def _ticket(i: int, due: int) -> dict[str, Any]:
    opened = _opened(i, due)
    return {"id": i, "number": 1000 + i, "subject": f"ticket {i}", "status": "open", "priority": "medium",
            "requester_id": 1, "created_at": opened, "updated_at": opened}


def _opened(i: int, due: int) -> datetime:
    # The first `due` tickets opened just over 4 h ago (first response due now); the rest later.
    return NOW - timedelta(hours=4, minutes=1) if i <= due else NOW - timedelta(seconds=i % 10_000)


def _clocks(i: int, due: int) -> list[dict[str, Any]]:
    opened = _opened(i, due)
    return [{"id": 2 * i - 1 + k, "ticket_id": i, "kind": kind, "state": ClockState.RUNNING.value,
             "business_hours": False, "budget_seconds": budget, "elapsed_seconds": 0, "started_at": opened,
             "running_since": opened, "due_at": opened + timedelta(seconds=budget), "at_risk_at": None,
             "breached_at": None, "stopped_at": None}
            for k, (kind, budget) in enumerate((("first_response", 4 * 3600), ("resolution", 24 * 3600)))]


def _timers(i: int, due: int) -> list[dict[str, Any]]:
    rows = []
    for clock in _clocks(i, due):
        for action, share in ((TimerAction.AT_RISK, 0.8), (TimerAction.BREACH, 1.0)):
            at = clock["started_at"] + timedelta(seconds=clock["budget_seconds"] * share)
            if i <= due and clock["kind"] == "first_response" and action == TimerAction.AT_RISK:
                continue  # already fired for the due tickets: only their breach is due now
            rows.append({"ticket_id": i, "clock_id": clock["id"], "action": action.value, "due_at": at,
                         "created_at": clock["started_at"]})
    return rows


async def measure(url: str, tickets: int, due: int, batch: int, data_dir: Path) -> dict[str, Any]:
    db = Database(url)
    await upgrade(db)
    with timer() as filled:
        await fill(db, tickets, due)
    desk = Desk(db, CoreSettings(), AttachmentStore(data_dir / "attachments"), lambda: NOW)
    settings = SlaSettings(policies={Priority.MEDIUM: POLICY})
    async with db.read() as session:
        timers = int(await session.scalar(select(func.count()).select_from(SlaTimer)) or 0)
    rss_before = rss_mib()
    scheduler = SlaScheduler(desk, settings, batch=batch)
    next_due = []
    for _ in range(20):
        with timer() as t:
            await scheduler.next_due()
        next_due.append(t.seconds * 1000)
    async with db.read() as session:
        with timer() as read_due:
            found = await SlaScheduler(desk, settings, batch=due)._due(session, NOW)
    rss_firing = rss_mib()
    reset_peak_rss()
    with timer() as fired_t:
        fired = 0
        while n := await scheduler.fire_batch():
            fired += n
    with timer() as caught_up:
        handled = await scheduler.catch_up()  # the consumer reads the events the firing appended
    peak = peak_rss_mib()
    async with db.read() as session:
        events = int(await session.scalar(select(func.count()).select_from(Event)) or 0)
    await db.dispose()
    return {"tickets": tickets, "timers": timers, "due": len(found), "fired": fired, "events": events,
            "fill_s": filled.seconds, "next_due_ms": statistics.median(next_due),
            "read_due_ms": read_due.seconds * 1000,
            "fire_s": fired_t.seconds, "per_s": fired / fired_t.seconds if fired_t.seconds else 0.0,
            "catch_up_s": caught_up.seconds, "handled": handled, "rss": rss_before, "peak": peak,
            "growth": peak - rss_firing}


async def run(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-sla-"))
    rows = []
    try:
        engines = [("sqlite", lambda n: f"sqlite+aiosqlite:///{work / f'sla-{n}.db'}")]
        if args.postgres:
            engines.append(("postgresql", lambda n: _pg_database(args.postgres)))
        for engine, make_url in engines:
            for tickets in (args.baseline, args.tickets):
                url = make_url(tickets)
                url = await url if asyncio.iscoroutine(url) else url
                r = await measure(url, tickets, min(args.due, tickets), args.batch, work)
                rows.append([engine, r["tickets"], r["timers"], r["due"], f"{r['fill_s']:.1f}",
                             f"{r['next_due_ms']:.2f}", f"{r['read_due_ms']:.1f}", f"{r['fire_s']:.2f}",
                             f"{r['per_s']:.0f}", f"{r['catch_up_s']:.2f}", f"{r['rss']:.0f}", f"{r['growth']:.1f}"])
                print(f"  {engine} {tickets:,} tickets: fired {r['fired']:,}, consumer read {r['handled']:,} events",
                      flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(["engine", "tickets", "timers", "due", "fill s", "next-due ms", "read-due ms", "fire s",
                 "fired/s", "consumer s", "RSS MiB", "+MiB firing"], rows,
                title=f"SLA scheduler: find and fire {args.due:,} due timers (batch {args.batch})")


async def _pg_database(server_url: str) -> str:
    import asyncpg

    name = f"bench_sla_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(server_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return server_url.rsplit("/", 1)[0] + "/" + name


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    main()
