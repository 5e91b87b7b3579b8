"""Benchmark: time and memory to build the daily report over 10k, 100k and 1M tickets (SQLite, PostgreSQL).

    python -m bench.report                       # SQLite in a temporary folder: 10k, 100k, 1M tickets
    python -m bench.report --sizes 10000 100000  # fewer sizes
    python -m bench.report --postgres postgresql+asyncpg://user:pw@127.0.0.1:5432/db   # also PostgreSQL
    python -m bench.report --no-sqlite --postgres URL                                  # PostgreSQL only

The database is filled with bulk inserts (not through the services): tickets spread evenly over a
year, each with the events the services would have written (opened, first reply, assignment,
status changes, some reopenings), so the report's queries see a realistic event log, written in
time order, one database per size. Figures: the report's numbers (core.reports.daily_report, all
SQL) cold (nothing stored) and daily (the days before stored, as yesterday's report leaves them),
the whole mail (numbers + chart + both templates), and the peak resident memory added.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete

from bench._util import peak_rss_mib, print_table, reset_peak_rss, rss_mib, timer
from core.attachments import AttachmentStore
from core.db import Database
from core.desk import CoreSettings, Desk
from core.migrate import upgrade
from core.report_models import ReportDay
from core.reports import daily_report
from supportbot.config import Config
from supportbot.reporting import build_daily

TIMEZONE = "Europe/Paris"
DAYS = 365
END = datetime(2026, 3, 3, 0, tzinfo=UTC)  # history ends here; the report is about the day before
NOW = END + timedelta(hours=7)
REPORT_DAY = date(2026, 3, 2)
STAFF = 12
PRIORITIES = ["low", "medium", "medium", "medium", "high", "urgent"]
CATEGORIES = ["general", "billing", "technical", None]
TICKETS_PER_CONTACT = 3


@dataclass
class Rows:
    contacts: list[tuple[Any, ...]]
    tickets: list[tuple[Any, ...]]
    events: list[tuple[Any, ...]]


class History:
    """Tickets and their event timelines; each ticket's status is where its last event left it."""

    def __init__(self, total: int, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.total = total
        self.tickets = 0
        self.events = 0

    def batch(self, count: int) -> Rows:
        """The next tickets in time order; events sorted by time, as a live desk appends them."""
        rows = Rows([], [], [])
        pending: list[tuple[Any, ...]] = []
        for _ in range(count):
            self.tickets += 1
            self._ticket(self.tickets, rows, pending)
        for event in sorted(pending, key=lambda e: e[4]):
            self.events += 1
            rows.events.append((self.events, *event))
        return rows

    def _ticket(self, tid: int, rows: Rows, events: list[tuple[Any, ...]]) -> None:
        r = self.rng
        if (tid - 1) % TICKETS_PER_CONTACT == 0:
            rows.contacts.append((tid // TICKETS_PER_CONTACT + 1, f"c{tid}@example.org", "", 0,
                                  END - timedelta(days=DAYS)))
        opened = END - timedelta(days=DAYS) + timedelta(seconds=(tid - r.random()) * DAYS * 86400 / self.total)
        staff = r.randint(1, STAFF)
        assignee = staff if r.random() < 0.6 else None
        timeline: list[tuple[datetime, str, int | None, dict[str, Any]]] = [
            (opened, "TicketOpened", None, {"follow_up_of": None, "machine": r.random() < 0.03})]
        at = opened + timedelta(seconds=r.lognormvariate(8, 1.2))
        timeline.append((at, "StaffReplied", staff, {"first_response": True}))
        timeline.append((at, "StatusChanged", staff, {"from": "open", "to": "pending", "reason": "staff replied"}))
        if assignee:
            timeline.append((opened + timedelta(minutes=5), "Assigned", staff, {"to_staff_id": assignee}))
        status = "pending"
        for _round in range(1 + (r.random() < 0.1)):  # one in ten is reopened once
            at += timedelta(seconds=r.lognormvariate(10.5, 1.0))
            timeline.append((at, "StatusChanged", staff, {"from": status, "to": "resolved", "reason": "set"}))
            status = "resolved"
            if _round == 0 and r.random() < 0.1:
                at += timedelta(hours=r.uniform(1, 48))
                timeline.append((at, "CustomerReplied", None, {"machine": False}))
                timeline.append((at, "StatusChanged", None, {"from": "resolved", "to": "open", "reason": "reply"}))
                status = "open"
        if r.random() < 0.7:
            at += timedelta(days=2)
            timeline.append((at, "StatusChanged", staff, {"from": status, "to": "closed", "reason": "auto"}))
        timeline = sorted(e for e in timeline if e[0] <= NOW)
        status = "open"
        for when, kind, actor, data in timeline:
            if kind == "StatusChanged":
                status = data["to"]
            events.append((kind, tid, actor, json.dumps(data), when))
        rows.tickets.append((tid, 1000 + tid, f"Ticket {tid}", status, r.choice(PRIORITIES), r.choice(CATEGORIES),
                             (tid - 1) // TICKETS_PER_CONTACT + 1, assignee, opened, timeline[-1][0]))


def _t(at: datetime) -> str:
    return at.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def sqlite_fill(path: Path, history: History, target: int, chunk: int = 50_000) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")
        if history.tickets == 0:
            conn.executemany("INSERT INTO staff (id, display_name, role, created_at) VALUES (?, ?, 'agent', ?)",
                             [(i, f"Agent {i}", _t(END)) for i in range(1, STAFF + 1)])
        while history.tickets < target:
            b = history.batch(min(chunk, target - history.tickets))
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO contacts (id, email, name, blocked, created_at) VALUES (?, ?, ?, ?, ?)",
                             [(*c[:4], _t(c[4])) for c in b.contacts])
            conn.executemany(
                "INSERT INTO tickets (id, number, subject, status, priority, category, requester_id, assignee_id, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(*t[:8], _t(t[8]), _t(t[9])) for t in b.tickets])
            conn.executemany("INSERT INTO events (id, type, ticket_id, actor_staff_id, data, created_at) "
                             "VALUES (?, ?, ?, ?, ?, ?)", [(*e[:5], _t(e[5])) for e in b.events])
            conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


async def postgres_fill(url: str, history: History, target: int, chunk: int = 50_000) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        if history.tickets == 0:
            await conn.executemany("INSERT INTO staff (id, display_name, role, created_at) "
                                   "VALUES ($1, $2, 'agent', $3)",
                                   [(i, f"Agent {i}", END.replace(tzinfo=None)) for i in range(1, STAFF + 1)])
        while history.tickets < target:
            b = history.batch(min(chunk, target - history.tickets))
            async with conn.transaction():
                await conn.copy_records_to_table("contacts", columns=["id", "email", "name", "blocked", "created_at"],
                                                 records=[(c[0], c[1], c[2], bool(c[3]), c[4].replace(tzinfo=None))
                                                          for c in b.contacts])
                await conn.copy_records_to_table(
                    "tickets", columns=["id", "number", "subject", "status", "priority", "category", "requester_id",
                                        "assignee_id", "created_at", "updated_at"],
                    records=[(*t[:8], t[8].replace(tzinfo=None), t[9].replace(tzinfo=None)) for t in b.tickets])
                await conn.copy_records_to_table(
                    "events", columns=["id", "type", "ticket_id", "actor_staff_id", "data", "created_at"],
                    records=[(*e[:5], e[5].replace(tzinfo=None)) for e in b.events])
        await conn.execute("ANALYZE")  # autovacuum would, a minute later; a restored dump needs it too
    finally:
        await conn.close()


async def measure(url: str, runs: int) -> tuple[float, float, float, float]:
    """(cold figures s, daily figures s, daily whole mail s, peak RSS added MiB).

    Cold: nothing stored yet (the first report after install). Daily: the days before the report
    day are stored, as yesterday's report left them; the report day itself is scanned. Whole mail:
    the daily figures plus the chart and both templates.
    """
    from core.report_view import sample_report
    from supportbot.report_chart import trend_chart_png

    desk = Desk(Database(url), CoreSettings(), AttachmentStore(Path(tempfile.mkdtemp())), lambda: NOW)
    config = Config.model_validate({"desk": {"timezone": TIMEZONE}, "reports": {"managers": ["m@example.org"]}})
    try:
        await desk.db.ping()
        trend_chart_png(sample_report().trend)  # imports matplotlib and its fonts: not counted
        reset_peak_rss()
        base = rss_mib()
        with timer() as cold:
            report = await daily_report(desk, REPORT_DAY, TIMEZONE)
        assert report.today.opened > 0, "the report day has no tickets: the fill is wrong"
        daily, whole = [], []
        for _ in range(runs):
            await _forget_report_day(desk)
            with timer() as t:
                await daily_report(desk, REPORT_DAY, TIMEZONE)
            daily.append(t.seconds)
            await _forget_report_day(desk)
            with timer() as t:
                await build_daily(desk, config, REPORT_DAY)
            whole.append(t.seconds)
        return cold.seconds, min(daily), min(whole), peak_rss_mib() - base
    finally:
        await desk.close()


async def _forget_report_day(desk: Desk) -> None:
    async with desk.db.transaction() as session:
        await session.execute(delete(ReportDay).where(ReportDay.day == REPORT_DAY))


def _sizes(values: list[int]) -> list[int]:
    return sorted(set(values))


async def bench_engine(name: str, make_url: Any, fill: Any, sizes: list[int], runs: int) -> list[list[object]]:
    """Each size in a database of its own, filled in time order like a desk that ran for a year."""
    rows: list[list[object]] = []
    for size in sizes:
        url = await make_url(size)
        history = History(size)
        with timer() as t:
            await fill(url, history, size)
        cold, daily, whole, peak = await measure(url, runs)
        print(f"{name}: {size:,} tickets, {history.events:,} events filled in {t.seconds:.0f} s; "
              f"figures {cold:.3f} s cold, {daily:.3f} s daily", flush=True)
        rows.append([name, size, history.events, cold, daily, whole, peak])
    return rows


async def main_async(args: argparse.Namespace) -> None:
    sizes = _sizes(args.sizes)
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-report-", dir=args.tmp) as folder:

        async def sqlite_url(size: int) -> str:
            for old in Path(folder).glob("report-*.db*"):
                old.unlink()  # one database at a time: 1M tickets take about 1.5 GB
            url = f"sqlite+aiosqlite:///{folder}/report-{size}.db"
            await _migrate(url)
            return url

        async def fill_sqlite(url: str, history: History, size: int) -> None:
            await asyncio.to_thread(sqlite_fill, Path(url.split(":///", 1)[1]), history, size)

        if args.sqlite:
            rows += await bench_engine("sqlite", sqlite_url, fill_sqlite, sizes, args.runs)
    if args.postgres:

        async def postgres_url(size: int) -> str:
            await _migrate(args.postgres)
            await _truncate_postgres(args.postgres)
            return str(args.postgres)

        async def fill_pg(url: str, history: History, size: int) -> None:
            await postgres_fill(url, history, size)

        rows += await bench_engine("postgresql", postgres_url, fill_pg, sizes, args.runs)
    print_table(["engine", "tickets", "events", "cold figures s", "daily figures s", "daily mail s",
                 "peak RSS +MiB"], rows, title=f"Daily report for {REPORT_DAY} ({TIMEZONE}), best of {args.runs}")


async def _migrate(url: str) -> None:
    db = Database(url)
    try:
        await upgrade(db)
    finally:
        await db.dispose()


async def _truncate_postgres(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute("TRUNCATE events, tickets, contacts, staff, report_runs, report_days CASCADE")
    finally:
        await conn.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per size (default: %(default)s)")
    parser.add_argument("--postgres", metavar="URL", help="also on this PostgreSQL database (its tables are emptied)")
    parser.add_argument("--sqlite", action=argparse.BooleanOptionalAction, default=True,
                        help="run on SQLite (default: yes; --no-sqlite for PostgreSQL only)")
    parser.add_argument("--tmp", metavar="DIR", help="where the SQLite files go (default: the system's temp)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    main()
