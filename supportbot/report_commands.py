"""`supportbot report daily [--date D] [--print|--send] [--html FILE] [--chart FILE]`."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.report_view import CHART_CID
from supportbot.config import Config


def add_report_commands(commands: Any) -> None:
    """Adds the `report` subcommand to the CLI's subparsers."""
    report = commands.add_parser("report", help="the daily summary for managers: print it or mail it")
    report.set_defaults(handler="report_commands:report")
    rcmd = report.add_subparsers(dest="report_command", metavar="ACTION", required=True)
    daily = rcmd.add_parser(
        "daily", help="the report about one local day (default: yesterday in [reports] timezone)",
        description="--print (the default) shows the text version; --send mails it to [reports] managers "
                    "through the outbox and records the day as sent, so the schedule does not send it again.")
    daily.add_argument("--date", type=_day, metavar="YYYY-MM-DD", help="the local day to report on")
    action = daily.add_mutually_exclusive_group()
    action.add_argument("--print", dest="send", action="store_false", help="print the text version (default)")
    action.add_argument("--send", dest="send", action="store_true", help="mail it to the managers now")
    daily.set_defaults(send=False)  # --print's store_false would otherwise make sending the default
    daily.add_argument("--html", type=Path, metavar="FILE", help="also write the HTML version here")
    daily.add_argument("--chart", type=Path, metavar="FILE", help="also write the chart PNG here")


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


async def report(args: argparse.Namespace, config: Config) -> int:
    from supportbot.commands import open_ready_desk
    from supportbot.reporting import build_daily, queue_report

    desk = await open_ready_desk(config)
    try:
        rendered = await build_daily(desk, config, args.date)
        if (args.html or args.chart) and not rendered.chart_png:
            print("supportbot: no chart drawn: matplotlib is not installed (pip install 'supportbot[chart]')",
                  file=sys.stderr)
        if args.html:
            # Shown from a file, the chart cannot come by Content-ID: point it at the PNG beside it.
            chart = args.chart or args.html.with_suffix(".png")
            if rendered.chart_png:
                chart.write_bytes(rendered.chart_png)
            args.html.write_text(rendered.html.replace(f"cid:{CHART_CID}", chart.name), encoding="utf-8")
        elif args.chart and rendered.chart_png:
            args.chart.write_bytes(rendered.chart_png)
        if not args.send:
            print(rendered.text, end="")
            return 0
        if rendered.report.end > desk.clock():
            raise UserError(f"{rendered.report.day} is not over yet in {rendered.report.timezone}: "
                            "only --print a report about a day in progress")
        if not config.reports.managers:
            raise UserError("no recipients: set [reports] managers = [\"boss@example.com\"] in the config")
        outbox_id = await queue_report(desk, config, rendered, scheduled=False)
        delivered = await _deliver_now(desk, config)
        print(f"daily report for {rendered.report.day} queued as outbox mail {outbox_id} for "
              f"{len(config.reports.managers)} manager(s); {delivered}")
        return 0
    finally:
        await desk.close()


async def _deliver_now(desk: Any, config: Config) -> str:
    """One round of the outbox sender, so --send does not wait for `supportbot run` to pick it up."""
    from mail_gateway.outbound.sender import OutboxSender
    from supportbot.outbound import build_transport, retry_policy

    sender = OutboxSender(desk, build_transport(config), retry_policy(config))
    claimed = await sender.deliver_due()
    return f"sender round: {claimed} mail(s) handed to {sender.transport.description}"
