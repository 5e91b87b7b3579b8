"""`supportbot mail outbox list | retry ID`: what mail is waiting, sent or failed, and sending it again."""

from __future__ import annotations

import argparse
from typing import Any

from core.enums import OutboxStatus
from core.models import OutboxMail
from core.outbox import list_mail, retry
from supportbot.config import Config


def add_outbox_commands(mail_actions: Any) -> None:
    """Adds `outbox` under the `mail` command group."""
    outbox = mail_actions.add_parser("outbox", help="outgoing mail: list it, send a failed one again")
    outbox.set_defaults(handler="outbox_commands:outbox")
    ocmd = outbox.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)
    listing = ocmd.add_parser("list", help="outgoing mail, newest first, with status and last error")
    listing.add_argument("--status", choices=[s.value for s in OutboxStatus], help="only this status")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default: %(default)s)")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    again = ocmd.add_parser("retry", help="queue a failed (or waiting) mail to be sent now, unchanged")
    again.add_argument("id", type=int, help="the outbox mail's id (from 'mail outbox list')")


async def outbox(args: argparse.Namespace, config: Config) -> int:
    from supportbot.commands import open_ready_desk

    desk = await open_ready_desk(config)
    try:
        if args.outbox_command == "retry":
            mail = await retry(desk, args.id)
            print(f"outbox mail {mail.id} queued again ({mail.kind}, {len(mail.recipients)} recipient(s), "
                  f"{mail.rfc822_message_id})")
            return 0
        status = OutboxStatus(args.status) if args.status else None
        mails = await list_mail(desk, status, limit=args.limit)
        if args.json:
            from supportbot.cli import print_json

            print_json([_as_json(m) for m in mails])
        else:
            _print_table(mails)
        return 0
    finally:
        await desk.close()


def _as_json(mail: OutboxMail) -> dict[str, Any]:
    return {"id": mail.id, "kind": mail.kind, "status": mail.status.value, "ticket_id": mail.ticket_id,
            "message_id": mail.rfc822_message_id, "recipients": mail.recipients, "automatic": mail.automatic,
            "attempts": mail.attempts, "next_attempt_at": mail.next_attempt_at.isoformat(),
            "created_at": mail.created_at.isoformat(),
            "sent_at": mail.sent_at.isoformat() if mail.sent_at else None, "last_error": mail.last_error}


def _print_table(mails: list[OutboxMail]) -> None:
    if not mails:
        print("outbox is empty")
        return
    header = ("ID", "STATUS", "KIND", "TRIES", "QUEUED", "NEXT/SENT", "TO")
    rows = [header] + [
        (str(m.id), m.status.value, m.kind, str(m.attempts), m.created_at.strftime("%Y-%m-%d %H:%M"),
         _next_or_sent(m), ", ".join(m.recipients))
        for m in mails]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    for row, mail in zip(rows, [None, *mails], strict=True):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
        if mail is not None and mail.last_error and mail.status != OutboxStatus.SENT:
            print(f"    last error: {mail.last_error[:200]}")


def _next_or_sent(mail: OutboxMail) -> str:
    if mail.status == OutboxStatus.FAILED:
        return "-"
    return (mail.sent_at or mail.next_attempt_at).strftime("%Y-%m-%d %H:%M")
