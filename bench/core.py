"""Benchmark of the ticket core: service calls per second, search latency at scale, memory, size.

Run `python -m bench.core --help`. Prints figures; asserts nothing (tests check behaviour).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select, text

from bench import _core_data as data
from bench._util import file_size_mib, peak_rss_mib, percentile, print_table, reset_peak_rss, timer
from core import services
from core.db import Database
from core.desk import CoreSettings, Desk
from core.enums import Status
from core.migrate import upgrade
from core.models import Message, Ticket
from core.queries import TicketFilters, search_tickets

OPEN_ONLY = TicketFilters(status=(Status.OPEN,))
KINDS = ("common", "rare", "missing")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.core",
        description="Measures the ticket core on SQLite (and PostgreSQL with --postgres): open_ticket and "
                    "reply calls per second, sequential and concurrent; search_tickets latency (p50/p95) for "
                    "common, rare and missing words, with and without a status filter, against a naive "
                    "LIKE '%word%' baseline on the same data; time to fill the database; peak memory and "
                    "database size. The search database grows from one size to the next.",
        epilog="Quick check (about a minute): python -m bench.core --quick. "
               "Full run (several minutes): python -m bench.core --messages 10000,1000000")
    p.add_argument("--messages", default="10000,1000000", metavar="N,N,…",
                   help="message counts to measure search at, ascending (default: %(default)s)")
    p.add_argument("--messages-per-ticket", type=int, default=20, metavar="N",
                   help="average messages per ticket (default: %(default)s: 50,000 tickets per million)")
    p.add_argument("--calls", type=int, default=1000, metavar="N",
                   help="service calls per throughput measurement (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=8, metavar="N",
                   help="tasks calling a service at the same time in the concurrent run (default: %(default)s)")
    p.add_argument("--queries", type=int, default=50, metavar="N",
                   help="searches per word kind and filter (default: %(default)s)")
    p.add_argument("--baseline-queries", type=int, default=10, metavar="N",
                   help="LIKE searches per word kind and filter; each reads every message (default: %(default)s)")
    p.add_argument("--postgres", metavar="URL",
                   help="also measure PostgreSQL: a server URL whose user may CREATE DATABASE, "
                        "e.g. postgresql+asyncpg://supportbot:supportbot@127.0.0.1:55433/supportbot_test")
    p.add_argument("--no-sqlite", action="store_true", help="measure only PostgreSQL (needs --postgres)")
    p.add_argument("--quick", action="store_true",
                   help="small defaults for CI: --messages 10000 --calls 200 --queries 20 --baseline-queries 5")
    p.add_argument("--seed", type=int, default=1, help="seed of the text generator (default: %(default)s)")
    p.add_argument("--keep", type=Path, metavar="DIR",
                   help="keep the SQLite files in DIR (and the PostgreSQL databases) instead of deleting them")
    args = p.parse_args(argv)
    if args.quick:  # only where the user gave no value of their own
        for name, value in (("messages", "10000"), ("calls", 200), ("queries", 20), ("baseline_queries", 5)):
            if getattr(args, name) == p.get_default(name):
                setattr(args, name, value)
    try:
        args.sizes = sorted(int(n.replace("_", "")) for n in args.messages.split(","))
    except ValueError:
        p.error(f"--messages takes comma-separated numbers, not {args.messages!r}")
    if args.no_sqlite and not args.postgres:
        p.error("--no-sqlite needs --postgres URL")
    if min(args.sizes + [args.calls, args.concurrency, args.queries, args.messages_per_ticket]) < 1:
        p.error("sizes and counts must be at least 1")
    return args


# --- where the databases live ----------------------------------------------------------------------

class SqliteTarget:
    name = "sqlite"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def new_database(self, label: str) -> str:
        path = self.folder / f"{label}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return f"sqlite+aiosqlite:///{path}"

    async def fill(self, url: str, gen: data.Generator, target: int) -> None:
        path = _sqlite_path(url)
        if gen.messages == 0:
            await asyncio.to_thread(data.sqlite_setup, path)
        await asyncio.to_thread(data.sqlite_fill, path, gen, target)

    async def size_mib(self, url: str) -> tuple[float, float | None]:
        path = _sqlite_path(url)
        index = await asyncio.to_thread(data.sqlite_index_mib, path)
        return file_size_mib(path, Path(f"{path}-wal")), index.get("full-text index")

    async def cleanup(self) -> None:
        """Nothing to stop: the SQLite file goes with the benchmark's temporary folder."""


def _sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite+aiosqlite:///"))


class PostgresTarget:
    name = "postgresql"

    def __init__(self, server_url: str, keep: bool) -> None:
        self.server_url = server_url
        self.keep = keep
        self.created: list[str] = []

    async def _admin(self) -> Any:
        import asyncpg  # only needed with --postgres

        return await asyncpg.connect(self.server_url.replace("postgresql+asyncpg://", "postgresql://"))

    async def new_database(self, label: str) -> str:
        name = f"bench_{label}_{uuid.uuid4().hex[:8]}"
        conn = await self._admin()
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.created.append(name)
        return self.server_url.rsplit("/", 1)[0] + "/" + name

    async def fill(self, url: str, gen: data.Generator, target: int) -> None:
        import asyncpg

        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            if gen.messages == 0:
                await data.postgres_setup(conn)
            await data.postgres_fill(conn, gen, target)
        finally:
            await conn.close()

    async def size_mib(self, url: str) -> tuple[float, float | None]:
        db = Database(url)
        try:
            async with db.read() as s:
                total = (await s.execute(text("SELECT pg_database_size(current_database())"))).scalar_one()
                index = (await s.execute(text(
                    "SELECT pg_relation_size('fts_messages_body') + pg_relation_size('fts_tickets_subject')"
                ))).scalar_one()
        finally:
            await db.dispose()
        return total / 2**20, index / 2**20

    async def cleanup(self) -> None:
        if self.keep:
            return
        conn = await self._admin()
        try:
            for name in self.created:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        finally:
            await conn.close()


Target = SqliteTarget | PostgresTarget


# --- 1. service calls per second -------------------------------------------------------------------

async def _calls_per_second(call: Callable[[int], Awaitable[object]], calls: int, tasks: int) -> list[object]:
    """Runs call(0..calls-1) spread over `tasks` concurrent tasks; returns one table row."""
    latencies: list[float] = []
    counter = iter(range(calls))

    async def worker() -> None:
        for i in counter:  # a shared iterator: each task takes the next call number
            with timer() as t:
                await call(i)
            latencies.append(t.seconds)

    with timer() as total:
        await asyncio.gather(*(worker() for _ in range(tasks)))
    return [tasks, calls, round(total.seconds, 2), calls / total.seconds,
            percentile(latencies, 50) * 1000, percentile(latencies, 95) * 1000]


async def bench_services(target: Target, args: argparse.Namespace, corpus: data.Corpus) -> list[list[object]]:
    desk = Desk.open(await target.new_database("services"), args.folder, CoreSettings())
    await upgrade(desk.db)
    texts = [corpus.message() for _ in range(200)]  # generated up front: time the service, not the text
    subjects = [corpus.subject() for _ in range(200)]
    numbers: list[int] = []
    staff = [services.StaffRef(f"Agent {i}", discord_id=i) for i in range(1, 6)]

    async def open_one(i: int) -> None:
        content = services.MailContent(text=texts[i % 200], subject=subjects[i % 200])
        change = await services.open_ticket(desk, services.ContactRef(f"c{i % 500}@example.org"), content)
        numbers.append(change.ticket.number)

    async def reply_one(i: int) -> None:
        await services.reply(desk, numbers[i % len(numbers)], staff[i % 5], texts[(i * 7) % 200])

    rows = []
    try:
        for name, call in (("open_ticket", open_one), ("reply", reply_one)):
            for tasks in (1, args.concurrency):
                rows.append([target.name, name, *await _calls_per_second(call, args.calls, tasks)])
    finally:
        await desk.close()
    return rows


# --- 2. search latency, against a LIKE baseline ----------------------------------------------------

async def like_search(desk: Desk, word: str, filters: TicketFilters, limit: int = 50) -> list[Ticket]:
    """The naive search the FTS indexes replace: LIKE '%word%' reads every message."""
    pattern = f"%{word}%"
    like = (lambda c: c.like(pattern)) if desk.db.is_sqlite else (lambda c: c.ilike(pattern))
    query = select(Ticket).where(
        or_(like(Ticket.subject), Ticket.id.in_(select(Message.ticket_id).where(like(Message.body_text)))),
        Ticket.merged_into_id.is_(None))
    if filters.status:
        query = query.where(Ticket.status.in_(filters.status))
    query = query.order_by(Ticket.updated_at.desc(), Ticket.id.desc()).limit(limit)
    async with desk.db.read() as session:
        return list(await session.scalars(query))


Search = Callable[[Desk, str, TicketFilters], Awaitable[Sequence[object]]]


async def _latencies(search: Search, desk: Desk, filters: TicketFilters,
                     words: Sequence[str]) -> tuple[list[float], float]:
    times, found = [], 0
    for word in words:
        with timer() as t:
            found += len(await search(desk, word, filters))
        times.append(t.seconds * 1000)
    return times, found / max(1, len(words))


def query_words(corpus: data.Corpus, count: int) -> dict[str, list[str]]:
    buckets = {"common": corpus.common_words(), "rare": corpus.rare_words(),
               "missing": corpus.missing_words(count)}
    picked = {}
    for kind, bucket in buckets.items():
        corpus.rng.shuffle(bucket)
        picked[kind] = [bucket[i % len(bucket)] for i in range(count)] if bucket else []
    return picked


async def bench_search_at(desk: Desk, size: int, words: dict[str, list[str]],
                          args: argparse.Namespace, engine: str) -> list[list[object]]:
    await search_tickets(desk, "warmup")  # first use opens connections and compiles statements
    rows = []
    for kind in KINDS:
        for label, filters in (("-", TicketFilters()), ("status=open", OPEN_ONLY)):
            fts, hits = await _latencies(search_tickets, desk, filters, words[kind])
            base, _ = await _latencies(like_search, desk, filters, words[kind][:args.baseline_queries])
            p50, like50 = percentile(fts, 50), percentile(base, 50)
            rows.append([engine, size, kind, label, len(fts), p50, percentile(fts, 95), like50,
                         percentile(base, 95), f"{like50 / p50:,.0f}x", hits])
    return rows


@dataclass
class Results:
    services: list[list[object]] = field(default_factory=list)
    fills: list[list[object]] = field(default_factory=list)
    searches: list[list[object]] = field(default_factory=list)
    memory: list[list[object]] = field(default_factory=list)


async def bench_search(target: Target, args: argparse.Namespace, out: Results) -> None:
    gen = data.Generator(data.Corpus(args.seed), messages_per_ticket=args.messages_per_ticket)
    url = await target.new_database("search")
    db = Database(url)
    await upgrade(db)
    await db.dispose()
    for size in args.sizes:
        reset_peak_rss()
        before = gen.messages
        with timer() as t:
            await target.fill(url, gen, size)
        total, index = await target.size_mib(url)
        out.fills.append([target.name, size, gen.tickets, round(t.seconds, 1),
                          (gen.messages - before) / t.seconds, total, index if index is not None else "-"])
        out.memory.append([target.name, f"fill to {size:,} messages", peak_rss_mib()])
        progress(f"{target.name}: filled to {size:,} messages in {t.seconds:,.0f} s, {total:,.0f} MiB")
        reset_peak_rss()
        desk = Desk.open(url, args.folder, CoreSettings())
        try:
            words = query_words(gen.corpus, args.queries)
            out.searches.extend(await bench_search_at(desk, size, words, args, target.name))
        finally:
            await desk.close()
        out.memory.append([target.name, f"search at {size:,} messages", peak_rss_mib()])
        progress(f"{target.name}: searched at {size:,} messages")


# --- report ----------------------------------------------------------------------------------------

def progress(line: str) -> None:
    """Long runs say where they are, on stderr so the figures on stdout stay clean."""
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def report(r: Results) -> None:
    print_table(["engine", "service call", "tasks", "calls", "seconds", "calls/s", "p50 ms", "p95 ms"],
                r.services, title="1. Service calls (each one transaction with its events)")
    print_table(["engine", "messages", "tickets", "fill s", "messages/s", "db MiB", "fts index MiB"],
                r.fills, title="2a. Filling the search database (bulk inserts, FTS triggers/indexes active)")
    print_table(["engine", "messages", "words", "filter", "queries", "fts p50 ms", "fts p95 ms",
                 "like p50 ms", "like p95 ms", "speed-up p50", "tickets found"],
                r.searches, title="2b. search_tickets (limit 50) against LIKE '%word%' on the same data")
    print_table(["engine", "phase", "peak RSS MiB"], r.memory, title="3. Memory of this process")


async def run(args: argparse.Namespace, folder: Path) -> Results:
    targets: list[Target] = [] if args.no_sqlite else [SqliteTarget(folder)]
    if args.postgres:
        targets.append(PostgresTarget(args.postgres, keep=args.keep is not None))
    results = Results()
    for target in targets:
        try:
            reset_peak_rss()
            results.services.extend(await bench_services(target, args, data.Corpus(args.seed + 1)))
            progress(f"{target.name}: service calls measured")
            results.memory.append([target.name, f"{args.calls:,} calls per service run", peak_rss_mib()])
            await bench_search(target, args, results)
        finally:
            await target.cleanup()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="supportbot-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    args.folder = folder
    print(f"bench.core: sizes {', '.join(f'{n:,}' for n in args.sizes)} messages; files in {folder}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start", flush=True)
    try:
        report(asyncio.run(run(args, folder)))
        # Other work on the machine slows every figure: say how busy it was.
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (1 min), {os.getloadavg()[1]:.1f} (5 min)")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
