"""What `supportbot ingest` and `supportbot mail quarantine …` do, once the CLI has parsed them."""

from __future__ import annotations

import argparse
import sys
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path

from core import inbound
from core.desk import Desk
from core.enums import InboundStatus
from core.errors import UserError, describe_error
from core.intake import Kind
from core.models import InboundMail
from mail_gateway.pipe import ingest as ingest_mails
from supportbot.app import desk_secret
from supportbot.config import Config
from supportbot.mail_wiring import handoff, intake_settings

EX_NOINPUT = 66
EX_TEMPFAIL = 75
SHOW_EXCERPT_BYTES = 4000
RETRY_ALL_LIMIT = 10_000


def _read_inputs(files: list[str]) -> list[tuple[str, bytes]]:
    if not files:
        return [("stdin", sys.stdin.buffer.read())]
    return [(name, Path(name).read_bytes()) for name in files]


async def ingest(args: argparse.Namespace, config: Config) -> int:
    """Exit 0 when every mail is stored (even if quarantined); 75 when one is not, so the MTA retries."""
    from supportbot.commands import open_ready_desk

    try:
        mails = _read_inputs(args.files)
    except OSError as e:
        print(f"supportbot: cannot read {e.filename}: {e.strerror}", file=sys.stderr)
        return EX_NOINPUT
    # Whatever stops us before a mail is stored is temporary for the MTA: it must try again.
    try:
        settings = intake_settings(config, desk_secret(config))
    except Exception as e:  # e.g. the pipe runs as a user who cannot read data_dir/secret.key
        print(f"supportbot: cannot read the signing key ({describe_error(e)}); nothing stored", file=sys.stderr)
        return EX_TEMPFAIL
    try:
        desk = await open_ready_desk(config)
    except Exception as e:  # database away or schema behind
        print(f"supportbot: cannot open the database ({describe_error(e)}); nothing stored",
              file=sys.stderr)
        return EX_TEMPFAIL
    try:
        results = await ingest_mails(desk, handoff(desk, settings), mails,
                                     envelope_from=args.envelope_from, envelope_to=args.envelope_to or ())
    finally:
        await desk.close()
    for result in results:
        print(result.line)
    return 0 if all(r.stored for r in results) else EX_TEMPFAIL


async def quarantine(args: argparse.Namespace, config: Config) -> int:
    from supportbot.commands import open_ready_desk

    desk = await open_ready_desk(config)
    try:
        if args.quarantine_command == "list":
            return await _list(desk, args.limit, InboundStatus.HELD if args.held else InboundStatus.QUARANTINED)
        if args.quarantine_command == "show":
            return _show(await inbound.get(desk, args.id))
        return await _retry(desk, config, args)
    finally:
        await desk.close()


async def machine(args: argparse.Namespace, config: Config) -> int:
    """`mail machine list|show`: auto-replies, list posts and reports that answered none of our tickets."""
    from supportbot.commands import open_ready_desk

    desk = await open_ready_desk(config)
    try:
        if args.machine_command == "show":
            row = await inbound.get(desk, args.id)
            if not (row.reason or "").startswith(MACHINE_MAIL):
                raise UserError(f"mail {row.id} is not machine mail kept without a ticket")
            return _show(row)
        return await _list(desk, args.limit, InboundStatus.HELD, reason_prefix=MACHINE_MAIL, what="machine")
    finally:
        await desk.close()


MACHINE_MAIL = "machine-mail:"  # the reason core.intake gives machine mail that answers no ticket


async def _list(desk: Desk, limit: int, status: InboundStatus, *, reason_prefix: str | None = None,
                what: str | None = None) -> int:
    rows = await inbound.list_by_status(desk, status, limit=limit, reason_prefix=reason_prefix)
    if not rows:
        print(f"no {what or status} mail")
        return 0
    for row in rows:
        subject = _headers(row.raw).get("subject", "") or "(no subject)"
        print(f"{row.id:>8}  {row.received_at:%Y-%m-%d %H:%M}  {row.source:<12}  "
              f"{' '.join(subject.split())[:50]:<50}  {(row.reason or '')[:80]}")
    return 0


def _show(row: InboundMail) -> int:
    out = sys.stdout
    out.write(f"mail {row.id} · {row.status} · {row.source} · received {row.received_at:%Y-%m-%d %H:%M:%S UTC}\n")
    out.write(f"reason: {row.reason or '-'}\n")
    out.write(f"envelope from: {row.envelope_from or '-'}\n")
    out.write(f"envelope to: {', '.join(row.envelope_to) or '-'}\n")
    out.write(f"size: {len(row.raw)} bytes · sha256 {row.sha256}\n\n")
    head, _, body = row.raw.partition(b"\r\n\r\n") if b"\r\n\r\n" in row.raw else row.raw.partition(b"\n\n")
    out.write(head.decode("utf-8", "replace")[:SHOW_EXCERPT_BYTES * 4].rstrip() + "\n\n")
    excerpt = body[:SHOW_EXCERPT_BYTES].decode("utf-8", "replace")
    out.write(excerpt.rstrip() + "\n")
    if len(body) > SHOW_EXCERPT_BYTES:
        out.write(f"[… {len(body) - SHOW_EXCERPT_BYTES} more bytes]\n")
    return 0


async def _retry(desk: Desk, config: Config, args: argparse.Namespace) -> int:
    status = InboundStatus.HELD if args.held else InboundStatus.QUARANTINED
    if args.release and (args.all or args.id is None):
        raise UserError("--release lets one held mail through: name its id")
    if args.all:
        ids = [r.id for r in await inbound.list_by_status(desk, status, RETRY_ALL_LIMIT)]
    elif args.id is not None:
        row = await inbound.get(desk, args.id)
        if row.status not in (InboundStatus.QUARANTINED, InboundStatus.HELD):
            raise UserError(f"mail {row.id} is {row.status}, not quarantined or held")
        if args.release and row.status != InboundStatus.HELD:
            raise UserError(f"mail {row.id} is {row.status}, not held: --release is for held mail")
        ids = [row.id]
    else:
        raise UserError("name a mail id, or --all")
    if not ids:
        print(f"no {status} mail")
        return 0
    await inbound.requeue(desk, ids, release=args.release)
    taking = handoff(desk, intake_settings(config, desk_secret(config)))
    failed = 0
    for mail_id in sorted(ids):
        [outcome] = await taking.take([mail_id])
        failed += outcome.kind == Kind.QUARANTINED
        print(outcome.describe(desk.format_number))
    return 1 if failed else 0


def _headers(raw: bytes) -> dict[str, str]:
    """Decoded header values for display (the stdlib is enough for one line per row)."""
    try:
        parsed = BytesHeaderParser(policy=compat32).parsebytes(raw[:64 * 1024])
        return {k.lower(): str(make_header(decode_header(str(v)))) for k, v in parsed.items()}
    except Exception:  # a header too broken to decode: the list still shows the row
        return {}
