"""What each `supportbot` subcommand does, once the CLI has parsed it and loaded the config."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from core.desk import Desk
from core.enums import Priority, Status
from core.errors import UserError
from core.migrate import current_revision, head_revision, schema_differences, upgrade
from core.queries import (
    MAX_PAGE,
    TicketDetail,
    TicketFilters,
    TicketSummary,
    list_tickets,
    search_tickets,
    ticket_detail,
    to_json,
)
from core.report_view import sample_report_context
from core.sla.queries import ticket_sla
from supportbot import app as runtime
from supportbot.config import Config
from supportbot.templating import builtin_template_names, template_environment

STARTER_CONFIG = Path(__file__).resolve().parent / "config.example.toml"


def write_starter_config(path: Path, *, force: bool = False) -> int:
    if path.exists() and not force:
        raise UserError(f"{path} exists already (use --force to overwrite it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(STARTER_CONFIG, path)
    print(f"wrote {path}; edit it, then run: supportbot --config {path} run")
    return 0


async def migrate(args: argparse.Namespace, config: Config) -> int:
    desk = runtime.open_desk(config)
    try:
        change = await upgrade(desk.db)
    finally:
        await desk.close()
    print(change)
    return 0


async def run(args: argparse.Namespace, config: Config) -> int:
    await runtime.run(config, migrate=not args.no_migrate)
    return 0


SAMPLE_CONTEXT: dict[str, Any] = {
    "desk_name": "Example Support", "subject": "Re: [#1042] Printer on fire", "preheader": "",
    "reply_marker": "##- Please type your reply above this line -##", "token": "sample-token",
    "customer_name": "Alice", "ticket": {"ref": "#1042", "number": 1042, "subject": "Printer on fire"},
    "response_expectation": "We usually answer within one business day.", "summary": "Help, it burns.",
    "body_text": "Please unplug it first.\n\nThen call us.", "body_html": "<p>Please unplug it first.</p>",
    "staff_name": "Bob", "attachments": ["manual.pdf"], "resolve_on": "14 March 2026",
}
# templates/reports/*: a filled-in sample report ("report", "chart_cid"); subject/desk_name as above.
SAMPLE_CONTEXT.update({k: v for k, v in sample_report_context().items() if k not in SAMPLE_CONTEXT})


async def check(args: argparse.Namespace, config: Config) -> int:
    """Checks an operator can run before going live; prints one line per check."""
    failures = 0
    print(f"config: ok ({config.source or 'built-in defaults'})")
    env = template_environment()
    for name in builtin_template_names():
        if name.endswith(("layout.html.j2",)) or "/_" in name:
            continue
        try:
            rendered = env.get_template(name).render(SAMPLE_CONTEXT)
            print(f"template {name}: ok ({len(rendered)} characters)")
        except Exception as e:  # a broken template is the finding, not a crash
            failures += 1
            print(f"template {name}: FAILED: {type(e).__name__}: {e}")
    desk = runtime.open_desk(config)
    try:
        revision = await current_revision(desk.db)
        head = head_revision()
        if revision != head:
            print(f"database: schema at {revision or 'nothing'}, newest is {head}: run 'supportbot migrate'")
            failures += 1
        else:
            drift = await schema_differences(desk.db)
            print(f"database: ok ({revision})" if not drift else f"database: schema drift: {drift}")
            failures += bool(drift)
    except Exception as e:
        print(f"database: FAILED: {type(e).__name__}: {e}")
        failures += 1
    finally:
        await desk.close()
    return 1 if failures else 0


async def open_ready_desk(config: Config) -> Desk:
    """A desk whose schema is current: a brand-new database is created, an old one must be migrated."""
    desk = runtime.open_desk(config)
    try:
        revision = await current_revision(desk.db)
        if revision is None:
            await upgrade(desk.db)
        elif revision != head_revision():
            raise UserError(f"the database schema is at {revision} but this version needs {head_revision()}: "
                            "run 'supportbot migrate'")
    except BaseException:
        await desk.close()
        raise
    return desk


async def tickets(args: argparse.Namespace, config: Config) -> int:
    desk = await open_ready_desk(config)
    try:
        if args.tickets_command == "show":
            detail = await ticket_detail(desk, args.number)
            sla = await ticket_sla(desk, detail.number)
            if args.json:
                _print_json({**to_json(detail), "sla": sla.as_json()})
            else:
                _print_detail(detail, sla.lines())
            return 0
        filters = TicketFilters(
            status=tuple(Status(s) for s in args.status or ()),
            priority=tuple(Priority(p) for p in args.priority or ()),
            category=args.category, assignee=args.assignee, requester=args.requester, tag=args.tag)
        if args.tickets_command == "search":
            if args.limit > MAX_PAGE:
                raise UserError(f"tickets search shows at most {MAX_PAGE} tickets (--limit {args.limit}): "
                                "add words or filters to narrow it, or use 'tickets list' with filters")
            found = await search_tickets(desk, args.text, filters, limit=args.limit)
            _print_json([to_json(t) for t in found]) if args.json else _print_table(found)
            return 0
        pages = ticket_pages(desk, filters, limit=args.limit, offset=args.offset)
        await (_stream_json(pages) if args.json else _stream_table(pages))
        return 0
    finally:
        await desk.close()


async def ticket_pages(desk: Desk, filters: TicketFilters, *, limit: int,
                       offset: int = 0) -> AsyncIterator[list[TicketSummary]]:
    """`limit` tickets from `offset` on (fewer only when there are no more), a query per MAX_PAGE, so
    the first rows print before the last are read. A ticket updated meanwhile moves to the top: the
    rows below shift one down, and the one that comes round again is not shown twice."""
    seen: set[int] = set()
    wanted = limit
    while wanted > 0:
        asked = min(wanted, MAX_PAGE)
        page = await list_tickets(desk, filters, limit=asked, offset=offset)
        offset += len(page)
        fresh = [t for t in page if t.number not in seen]
        seen.update(t.number for t in fresh)
        wanted -= len(fresh)
        if fresh:
            yield fresh
        if len(page) < asked:
            return


async def _stream_json(pages: AsyncIterator[list[TicketSummary]]) -> None:
    """The same JSON array print_json writes, one page at a time."""
    out = sys.stdout
    first = True
    async for page in pages:
        for ticket in page:
            item = json.dumps(to_json(ticket), indent=2, ensure_ascii=False, default=str)
            out.write(("[\n" if first else ",\n") + "\n".join("  " + line for line in item.split("\n")))
            first = False
    out.write("[]\n" if first else "\n]\n")


async def _stream_table(pages: AsyncIterator[list[TicketSummary]]) -> None:
    """The table, one page at a time; column widths come from the first page."""
    widths: list[int] | None = None
    async for page in pages:
        rows = [_table_row(t) for t in page]
        if widths is None:
            widths = _widths([TABLE_HEADER, *rows])
            _write_rows([TABLE_HEADER], widths)
        _write_rows(rows, widths)
    if widths is None:
        print("no tickets")


def _print_json(value: Any) -> None:
    from supportbot.cli import print_json

    print_json(value)


TABLE_HEADER = ("TICKET", "STATUS", "PRIORITY", "UPDATED", "REQUESTER", "ASSIGNEE", "SUBJECT")


def _table_row(t: TicketSummary) -> tuple[str, ...]:
    return (t.ref, t.status, t.priority, _when(t.updated_at), t.requester, t.assignee or "-", t.subject[:60])


def _widths(lines: Sequence[tuple[str, ...]]) -> list[int]:
    return [max(len(line[i]) for line in lines) for i in range(len(TABLE_HEADER) - 1)]


def _write_rows(lines: Iterable[tuple[str, ...]], widths: list[int]) -> None:
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=False)) + "  " + line[-1])


def _print_table(rows: list[TicketSummary]) -> None:
    if not rows:
        print("no tickets")
        return
    lines = [TABLE_HEADER, *(_table_row(t) for t in rows)]
    _write_rows(lines, _widths(lines))


def _print_detail(t: TicketDetail, sla_lines: Sequence[str] = ()) -> None:
    out = sys.stdout
    out.write(f"{t.ref}  {t.subject}\n")
    out.write(f"  status {t.status} · priority {t.priority} · category {t.category or '-'} · "
              f"assignee {t.assignee or '-'}\n")
    out.write(f"  requester {t.requester_name + ' ' if t.requester_name else ''}<{t.requester}>")
    if len(t.participants) > 1:
        out.write(f" · also {', '.join(p for p in t.participants if p != t.requester)}")
    out.write(f"\n  opened {_when(t.created_at)} · updated {_when(t.updated_at)}")
    if t.first_response_at:
        out.write(f" · first response {_when(t.first_response_at)}")
    out.write("\n")
    if t.tags:
        out.write(f"  tags {', '.join(t.tags)}\n")
    for line in sla_lines:
        out.write(f"  SLA: {line}\n")
    if t.merged_into:
        out.write(f"  merged into #{t.merged_into}\n")
    if t.follow_up_of:
        out.write(f"  follow-up of #{t.follow_up_of}\n")
    for m in t.messages:
        label = {"inbound": "from", "outbound": "reply by", "note": "note by"}.get(m.direction, m.direction)
        out.write(f"\n--- {label} {m.author} · {_when(m.created_at)}{' · automatic' if m.is_machine else ''}\n")
        out.write(m.text.rstrip() + "\n")
        for a in m.attachments:
            held = " (held back: too large)" if a.held_back else ""
            out.write(f"    [attachment] {a.filename} · {a.content_type} · {a.size} bytes{held}\n")


def _when(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC")
