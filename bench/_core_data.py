"""Generated support-desk data for bench/core.py: Zipf-distributed text and fast bulk fills."""

from __future__ import annotations

import itertools
import random
import sqlite3
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# The head of the vocabulary: the words people write to a support desk most, in rank order.
REAL_WORDS = [
    "the", "to", "i", "and", "a", "you", "my", "is", "it", "for", "of", "in", "not", "on", "this",
    "that", "we", "have", "be", "with", "can", "your", "please", "but", "are", "do", "was", "as",
    "at", "if", "me", "so", "no", "an", "or", "get", "any", "will", "our", "from", "all", "just",
    "when", "there", "has", "been", "order", "account", "invoice", "payment", "password", "email",
    "login", "error", "problem", "help", "thanks", "hello", "support", "refund", "app", "update",
    "page", "card", "delivery", "price", "subscription", "number", "phone", "address", "customer",
    "days", "issue", "working", "received", "again", "still", "since", "message", "screen",
    "button", "settings", "time", "week", "today",
]
# Generated words use only these syllables, so a word starting "qz" can never exist.
_SYLLABLES = [c + v for c in "bcdfghjklmnprstvw" for v in "aeiou"]
MISSING_PREFIX = "qz"
COMMON_RANKS = range(45, 95)  # "invoice", "password", "delivery"…: in some percent of messages
RARE_FROM_RANK = 50_000  # seen a handful of times per million words, like names and typos
STATUSES = ["closed"] * 12 + ["resolved"] * 3 + ["open"] * 2 + ["pending"] * 2 + ["in_progress"]
PRIORITIES = ["low", "medium", "medium", "medium", "high", "urgent"]
CATEGORIES = ["general", "billing", "technical"]
STAFF = 12


class Corpus:
    """Words drawn with Zipf's law (frequency ~ 1/rank) from a 200,000-word vocabulary."""

    def __init__(self, seed: int, vocabulary: int = 200_000) -> None:
        self.rng = random.Random(seed)
        words = list(dict.fromkeys(REAL_WORDS))
        seen = set(words)
        while len(words) < vocabulary:
            word = "".join(self.rng.choices(_SYLLABLES, k=self.rng.randint(2, 4)))
            if word not in seen:
                seen.add(word)
                words.append(word)
        self.vocab = words
        self.cum_weights = list(itertools.accumulate(1 / rank for rank in range(1, vocabulary + 1)))
        self.ranks = range(vocabulary)
        self.rare_seen: list[str] = []  # rare words and order numbers that really occur in the text
        self._rare_offered = 0

    def words(self, count: int) -> list[str]:
        ranks = self.rng.choices(self.ranks, cum_weights=self.cum_weights, k=count)
        if self.rng.random() < 0.02:
            self._remember_rare(max(ranks))
        return [self.vocab[r] for r in ranks]

    def message(self) -> str:
        words = self.words(self.rng.randint(12, 90))
        if self.rng.random() < 0.2:  # an order number: the rarest and most searched-for token
            number = str(self.rng.randint(10**7, 10**8 - 1))
            words.insert(self.rng.randrange(len(words)), number)
            if self.rng.random() < 0.02:
                self._keep(number)
        return " ".join(words).capitalize() + "."

    def subject(self) -> str:
        return " ".join(self.words(self.rng.randint(2, 7))).capitalize()

    def common_words(self) -> list[str]:
        return [self.vocab[r] for r in COMMON_RANKS]

    def rare_words(self) -> list[str]:
        return list(self.rare_seen)

    def missing_words(self, count: int) -> list[str]:
        return [MISSING_PREFIX + "".join(self.rng.choices(_SYLLABLES, k=3)) for _ in range(count)]

    def _remember_rare(self, rank: int) -> None:
        if rank >= RARE_FROM_RANK:
            self._keep(self.vocab[rank])

    def _keep(self, word: str) -> None:
        # Reservoir sampling: a fair sample of 500 over the whole fill, in bounded memory.
        self._rare_offered += 1
        if len(self.rare_seen) < 500:
            self.rare_seen.append(word)
        elif (slot := self.rng.randrange(self._rare_offered)) < 500:
            self.rare_seen[slot] = word


@dataclass
class Batch:
    contacts: list[tuple[Any, ...]] = field(default_factory=list)
    tickets: list[tuple[Any, ...]] = field(default_factory=list)
    participants: list[tuple[Any, ...]] = field(default_factory=list)
    messages: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass
class Generator:
    """Makes tickets in time order; the state carries over so a database can grow in steps."""

    corpus: Corpus
    messages_per_ticket: int = 20
    start: datetime = datetime(2024, 1, 1, tzinfo=UTC)
    tickets: int = 0
    messages: int = 0
    contacts: int = 0

    def batch(self, max_messages: int) -> Batch:
        """Whole tickets, about max_messages messages in all; ids continue from the last batch."""
        rng, out = self.corpus.rng, Batch()
        while len(out.messages) < max_messages:
            self.tickets += 1
            created = self.start + timedelta(minutes=10 * self.tickets)
            requester = self._requester(out)
            count = rng.randint(1, 2 * self.messages_per_ticket - 1)
            times = sorted(created + timedelta(seconds=rng.uniform(0, 10 * 86400)) for _ in range(count - 1))
            times.insert(0, created)
            for n, at in enumerate(times):
                self.messages += 1
                out.messages.append(self._message(self.tickets, requester, n, at))
            out.tickets.append((self.tickets, 1000 + self.tickets, self.corpus.subject(), rng.choice(STATUSES),
                                rng.choice(PRIORITIES), rng.choice(CATEGORIES), requester,
                                rng.randint(1, STAFF) if rng.random() < 0.7 else None, created, times[-1]))
            out.participants.append((self.tickets, requester, "requester"))
        out.messages.sort(key=lambda m: m[-1])  # ids follow time, as they do in a live desk
        return out

    def _requester(self, out: Batch) -> int:
        # Two tickets in three come from a returning customer.
        if self.contacts and self.corpus.rng.random() < 2 / 3:
            return self.corpus.rng.randint(1, self.contacts)
        self.contacts += 1
        out.contacts.append((self.contacts, f"customer{self.contacts}@example.org",
                             f"Customer {self.contacts}", False, self.start))
        return self.contacts

    def _message(self, ticket: int, requester: int, n: int, at: datetime) -> tuple[Any, ...]:
        note = n > 0 and self.corpus.rng.random() < 0.1
        inbound = n % 2 == 0 and not note
        direction = "note" if note else "inbound" if inbound else "outbound"
        text = self.corpus.message()
        mid = f"<{ticket}.{n}.{self.corpus.rng.getrandbits(40):x}@mail.example.org>"
        return (ticket, direction, requester if inbound else None,
                None if inbound else self.corpus.rng.randint(1, STAFF), text, mid, at)


# Message ids are left to the database: messages are sorted by time inside a batch.
_MESSAGE_COLUMNS = ["ticket_id", "direction", "author_contact_id", "author_staff_id", "body_text",
                    "message_id", "created_at"]
_TICKET_COLUMNS = ["id", "number", "subject", "status", "priority", "category", "requester_id",
                   "assignee_id", "created_at", "updated_at"]


def _sqlite_time(at: datetime) -> str:
    # The text SQLAlchemy's SQLite DateTime writes (naive UTC), so the app reads these rows back.
    return at.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def sqlite_setup(path: Path) -> None:
    """Staff and the ticket counter: what the services and filters expect to find."""
    with sqlite3.connect(path) as conn:
        conn.executemany("INSERT INTO staff (id, display_name, role, created_at) VALUES (?, ?, 'agent', ?)",
                         [(i, f"Agent {i}", "2024-01-01 00:00:00.000000") for i in range(1, STAFF + 1)])
    conn.close()


def sqlite_fill(path: Path, gen: Generator, target: int, chunk: int = 50_000) -> None:
    """Grows the database to `target` messages in large transactions; the FTS triggers stay on."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA cache_size=-262144")  # 256 MiB: a loader's setting, not the app's
        # Make the next batch while SQLite inserts this one (it tokenizes with the GIL released).
        with ThreadPoolExecutor(max_workers=1) as inserter:
            inserting: Future[None] | None = None
            while gen.messages < target:
                batch = gen.batch(min(chunk, target - gen.messages))
                if inserting is not None:
                    inserting.result()
                inserting = inserter.submit(_sqlite_batch, conn, batch)
            if inserting is not None:
                inserting.result()
        conn.execute("INSERT INTO counters (name, value) VALUES ('ticket_number', ?) "
                     "ON CONFLICT (name) DO UPDATE SET value = excluded.value", (1000 + gen.tickets,))
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _sqlite_batch(conn: sqlite3.Connection, b: Batch) -> None:
    t = _sqlite_time
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO contacts (id, email, name, blocked, created_at) VALUES (?, ?, ?, ?, ?)",
                     [(*c[:4], t(c[4])) for c in b.contacts])
    conn.executemany(f"INSERT INTO tickets ({', '.join(_TICKET_COLUMNS)}) VALUES ({', '.join('?' * 10)})",
                     [(*r[:8], t(r[8]), t(r[9])) for r in b.tickets])
    conn.executemany("INSERT INTO ticket_participants (ticket_id, contact_id, role) VALUES (?, ?, ?)",
                     b.participants)
    conn.executemany(
        "INSERT INTO messages (ticket_id, direction, author_contact_id, author_staff_id, subject, body_text, "
        "new_text, message_id, is_machine, created_at) VALUES (?, ?, ?, ?, '', ?, ?, ?, 0, ?)",
        [(m[0], m[1], m[2], m[3], m[4], m[4], m[5], t(m[6])) for m in b.messages])
    conn.execute("COMMIT")


def sqlite_index_mib(path: Path) -> dict[str, float]:
    """Size of the full-text index and of everything else, from SQLite's dbstat table."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT name LIKE '%\\_fts%' ESCAPE '\\', SUM(pgsize) FROM dbstat GROUP BY 1")
        sizes = {("full-text index" if fts else "tables and indexes"): size / 2**20 for fts, size in rows}
    conn.close()
    return sizes


async def postgres_setup(conn: Any) -> None:
    await conn.executemany("INSERT INTO staff (id, display_name, role, created_at) VALUES ($1, $2, 'agent', $3)",
                           [(i, f"Agent {i}", datetime(2024, 1, 1)) for i in range(1, STAFF + 1)])


async def postgres_fill(conn: Any, gen: Generator, target: int, chunk: int = 50_000) -> None:
    """COPY in batches (the GIN indexes are kept up to date row by row), then VACUUM ANALYZE."""
    while gen.messages < target:
        b = gen.batch(min(chunk, target - gen.messages))
        naive = [(*c[:4], c[4].replace(tzinfo=None)) for c in b.contacts]
        async with conn.transaction():
            await conn.copy_records_to_table("contacts", records=naive,
                                             columns=["id", "email", "name", "blocked", "created_at"])
            await conn.copy_records_to_table(
                "tickets", columns=_TICKET_COLUMNS,
                records=[(*r[:8], r[8].replace(tzinfo=None), r[9].replace(tzinfo=None)) for r in b.tickets])
            await conn.copy_records_to_table("ticket_participants", records=b.participants,
                                             columns=["ticket_id", "contact_id", "role"])
            await conn.copy_records_to_table(
                "messages", columns=_MESSAGE_COLUMNS + ["subject", "new_text", "is_machine"],
                records=[(*m[:6], m[6].replace(tzinfo=None), "", m[4], False) for m in b.messages])
    for table in ("contacts", "tickets", "staff"):  # ids were given explicitly: move the sequences past them
        await conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
    await conn.execute("INSERT INTO counters (name, value) VALUES ('ticket_number', $1) "
                       "ON CONFLICT (name) DO UPDATE SET value = excluded.value", 1000 + gen.tickets)
    # What autovacuum would do soon after a real import: statistics for the planner, and the GIN
    # pending list merged into the index (until then every search scans that list row by row).
    await conn.execute("VACUUM ANALYZE")

