"""The `supportbot` command: init, migrate, run, check, tickets …, each a thin call into the app."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import select
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from core.enums import Priority, Status
from core.errors import UserError
from supportbot import runloop
from supportbot.config import Config, ConfigError, find_config, load_config

log = logging.getLogger("supportbot")

EXIT_USAGE = 2
EXIT_USER_ERROR = 1
EXIT_CONFIG = 78  # EX_CONFIG
EXIT_SOFTWARE = 70  # EX_SOFTWARE
# Standard output closed before everything was written (`supportbot tickets list | head -1`): the
# output stops quietly with the status a shell gives any writer stopped by SIGPIPE (128 + 13), so
# `set -o pipefail` scripts see the same as with other tools, and a complete run is still 0.
EXIT_OUTPUT_CLOSED = 141

EXIT_STATUSES = (
    "Exit status: 0 done; 1 a request that cannot be done (one line says why); 2 bad usage; "
    "70 an unexpected failure; 78 a configuration error; 141 standard output closed early (e.g. "
    "piped into head): the output stops quietly. `ingest --help` lists its own."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="supportbot",
        description="An email-and-chat-native support desk: customers email, staff work in Discord.",
        epilog="Start with 'supportbot init' to write a config file, then 'supportbot run'. " + EXIT_STATUSES,
    )
    parser.add_argument("--config", metavar="PATH",
                        help="config file (default: $SUPPORTBOT_CONFIG, else ./supportbot.toml if it "
                             "exists, else built-in defaults)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    init = commands.add_parser("init", help="write a starter config file with every key documented")
    init.add_argument("path", nargs="?", default="supportbot.toml", help="where to write it (default: %(default)s)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")

    handled_by(commands.add_parser("migrate", help="create or upgrade the database schema"), "commands:migrate")

    run = commands.add_parser("run", help="run the desk: mail in and out, the Discord bot, health and metrics")
    run.add_argument("--no-migrate", action="store_true", help="do not upgrade the schema at start")
    handled_by(run, "commands:run")

    check = commands.add_parser("check", help="check the config, the database and that every template renders")
    handled_by(check, "commands:check")

    tickets = handled_by(commands.add_parser("tickets", help="list, show and search tickets"), "commands:tickets")
    tcmd = tickets.add_subparsers(dest="tickets_command", metavar="ACTION", required=True)
    listing = tcmd.add_parser("list", help="tickets, most recently updated first")
    _add_filters(listing)
    listing.add_argument("--limit", type=_positive, default=50,
                         help="this many, or all there are if fewer (default: %(default)s)")
    listing.add_argument("--offset", type=_not_negative, default=0, help="skip this many (for paging)")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    show = tcmd.add_parser("show", help="one ticket with all its messages")
    show.add_argument("number", type=_ticket_number, help="ticket number, with or without its prefix")
    show.add_argument("--json", action="store_true", help="print JSON")
    search = tcmd.add_parser("search", help="full-text search over subjects and message text")
    search.add_argument("text", help="words to find (all must match; prefixes match too)")
    _add_filters(search)
    search.add_argument("--limit", type=_positive, default=50,
                        help="at most this many, up to 500 (default: %(default)s)")
    search.add_argument("--json", action="store_true", help="print a JSON array")
    _add_mail_commands(commands)
    from supportbot.report_commands import add_report_commands

    add_report_commands(commands)
    return parser


def _add_mail_commands(commands: Any) -> None:
    from supportbot.outbox_commands import add_outbox_commands

    ingest = commands.add_parser(
        "ingest", help="store and process mail from .eml files or standard input (an MTA's pipe transport)",
        description="Exit 0 when every mail was stored (even if quarantined), 75 when one could not be "
                    "stored (the MTA should try again), 66 when a file cannot be read.")
    ingest.add_argument("files", nargs="*", metavar="FILE", help="mail files (default: one mail on stdin)")
    ingest.add_argument("--envelope-from", metavar="ADDRESS", help="the SMTP envelope sender, if known")
    ingest.add_argument("--envelope-to", metavar="ADDRESS", action="append",
                        help="an SMTP envelope recipient, if known (repeatable)")
    handled_by(ingest, "mail_commands:ingest")
    mail = commands.add_parser("mail", help="mail: the inbound quarantine and the outbox")
    mcmd = mail.add_subparsers(dest="mail_command", metavar="ACTION", required=True)
    quarantine = mcmd.add_parser("quarantine", help="mail that could not be processed: list, show, retry")
    handled_by(quarantine, "mail_commands:quarantine")
    machine = mcmd.add_parser("machine", help="auto-replies, list posts and reports that answered none of our "
                                              "tickets: kept, opened nothing")
    handled_by(machine, "mail_commands:machine")
    mach = machine.add_subparsers(dest="machine_command", metavar="ACTION", required=True)
    mach.add_parser("list", help="newest first, with the rule that recognised them").add_argument(
        "--limit", type=int, default=100)
    mach.add_parser("show", help="one of them: headers and an excerpt").add_argument("id", type=int)
    qcmd = quarantine.add_subparsers(dest="quarantine_command", metavar="ACTION", required=True)
    qlist = qcmd.add_parser("list", help="quarantined mail (or held mail), newest first, with the reason")
    qlist.add_argument("--limit", type=int, default=100)
    qlist.add_argument("--held", action="store_true",
                       help="mail held by a rule (blocked sender, rate limit, oversize) instead")
    qshow = qcmd.add_parser("show", help="one stored mail: reason, envelope, headers and an excerpt")
    qshow.add_argument("id", type=int)
    retry = qcmd.add_parser("retry", help="process quarantined (or held) mail again")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("id", type=int, nargs="?", help="the stored mail's id")
    which.add_argument("--all", action="store_true", help="every quarantined mail (with --held: every held one)")
    retry.add_argument("--held", action="store_true", help="with --all: the held mail instead")
    retry.add_argument("--release", action="store_true",
                       help="let one held mail through (with its id): the blocked-sender, rate-limit and size "
                            "rules are not asked, whichever process takes it")
    add_outbox_commands(mcmd)


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status", action="append", choices=[s.value for s in Status],
                        help="only this status (repeatable)")
    parser.add_argument("--priority", action="append", choices=[p.value for p in Priority],
                        help="only this priority (repeatable)")
    parser.add_argument("--category")
    parser.add_argument("--assignee", help="staff name or Discord id; 'none' for unassigned")
    parser.add_argument("--requester", help="customer email address")
    parser.add_argument("--tag")


def _positive(value: str) -> int:
    number = _integer(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"not a positive number: {value!r}")
    return number


def _not_negative(value: str) -> int:
    number = _integer(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"not 0 or more: {value!r}")
    return number


def _integer(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None


def _ticket_number(value: str) -> int:
    digits = value.lstrip("#").strip()
    if not digits.isdigit():
        raise argparse.ArgumentTypeError(f"not a ticket number: {value!r}")
    return int(digits)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            status = _main(argv)
        finally:
            sys.stdout.flush()  # now, so a reader that went away shows up here and not at exit
        return status
    except BrokenPipeError:
        if not stdout_closed():
            raise
        return _output_closed()


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "init":
        from supportbot.commands import write_starter_config

        return _guard(lambda: write_starter_config(Path(args.path), force=args.force))
    try:
        config = load_config(find_config(args.config))
    except ConfigError as e:
        print(f"supportbot: {e}", file=sys.stderr)
        return EXIT_CONFIG
    _setup_logging(config)
    return _guard(lambda: runloop.run(dispatch(args, config)))


Handler = Callable[[argparse.Namespace, Config], Awaitable[int]]


def handled_by(parser: argparse.ArgumentParser, handler: str) -> argparse.ArgumentParser:
    """The one way a command names what runs it: "module:function" under supportbot, imported only
    when that command runs (so `--help` stays quick)."""
    parser.set_defaults(handler=handler)
    return parser


async def dispatch(args: argparse.Namespace, config: Config) -> int:
    module, _, name = args.handler.partition(":")
    handler: Handler = getattr(importlib.import_module(f"supportbot.{module}"), name)
    return await handler(args, config)


def _guard(action: Callable[[], Any]) -> int:
    """Bad input gets one clear line; anything else is logged with its traceback, never shown raw."""
    try:
        result = action()
        return int(result or 0)
    except (UserError, ConfigError) as e:
        print(f"supportbot: {e}", file=sys.stderr)
        return EXIT_CONFIG if isinstance(e, ConfigError) else EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a bug or an outage: one clear line, the traceback only at debug level
        if isinstance(e, BrokenPipeError) and stdout_closed():
            raise  # not a failure: whoever read our output has stopped reading; main ends quietly
        log.debug("unexpected failure", exc_info=True)
        print(f"supportbot: unexpected failure: {type(e).__name__}: {e}\n"
              "  (set log_level = \"debug\" in the config for the full traceback)", file=sys.stderr)
        return EXIT_SOFTWARE


def stdout_closed() -> bool:
    """Standard output is a pipe or socket whose reading end has gone away (so a BrokenPipeError
    came from our output, not from, say, a mail server's connection)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except AttributeError:  # no poll() (Windows): a broken pipe in a command is its output
        return True
    except (OSError, ValueError):  # no file descriptor behind sys.stdout
        return False


def _output_closed() -> int:
    """Nothing more can be shown: send what is still buffered nowhere, so the flush at exit is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return EXIT_OUTPUT_CLOSED


def _setup_logging(config: Config) -> None:
    logging.basicConfig(
        level=config.log_level.upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # discord.py and aiosmtpd are chatty at info; their warnings still show.
    for noisy in ("discord", "mail.log", "aiosqlite", "asyncio", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
