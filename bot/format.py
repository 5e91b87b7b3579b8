"""Turning tickets and messages into Discord embeds and text, always within Discord's limits."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import discord

from core.queries import MessageView, TicketDetail, TicketSummary
from core.stats import DeskStats

# Discord's limits (https://discord.com/developers/docs/resources/message#embed-object-embed-limits).
CONTENT_MAX = 2000
TITLE_MAX = 256
DESCRIPTION_MAX = 4096
FIELD_VALUE_MAX = 1024
AUTHOR_MAX = 256
FOOTER_MAX = 2048
THREAD_NAME_MAX = 100
# One message chunk: leaves room for title, author and footer under the 6000-character embed total.
CHUNK = 4000

STATUS_COLOURS = {
    "open": discord.Colour.blue(), "pending": discord.Colour.gold(), "in_progress": discord.Colour.purple(),
    "resolved": discord.Colour.green(), "closed": discord.Colour.dark_grey(),
}
KIND_STYLE = {  # message direction -> (heading, colour)
    "inbound": ("Customer wrote", discord.Colour.blue()),
    "outbound": ("Reply sent to the customer", discord.Colour.green()),
    "note": ("Internal note", discord.Colour.gold()),
}


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def split_text(text: str, limit: int = CHUNK) -> list[str]:
    """Chunks of at most `limit` characters whose concatenation is exactly `text`.

    Cuts after a paragraph break, else a line break, else a space, else hard at the limit, so a
    long mail reads naturally across messages and nothing is lost or duplicated.
    """
    chunks: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        cut = 0
        for separator in ("\n\n", "\n", " "):
            at = window.rfind(separator)
            if at >= limit // 2:
                cut = at + len(separator)
                break
        cut = cut or limit
        chunks.append(rest[:cut])
        rest = rest[cut:]
    if rest or not chunks:
        chunks.append(rest)
    return chunks


def thread_name(ref: str, subject: str) -> str:
    return truncate(f"[{ref}] {' '.join(subject.split())}", THREAD_NAME_MAX)


def status_label(status: str) -> str:
    return status.replace("_", " ")


def tag_names(ticket: TicketSummary) -> list[str]:
    """The forum tags a ticket's post should carry: status, priority and category (Discord allows 5)."""
    names = [status_label(ticket.status), ticket.priority]
    if ticket.category:
        names.append(ticket.category)
    return [truncate(n, 20) for n in names]  # a forum tag name holds 20 characters


def when(moment: datetime | None) -> str:
    return discord.utils.format_dt(moment, "f") if moment else "—"


def requester_line(ticket: TicketSummary) -> str:
    name = ticket.requester_name.strip()
    return f"{name} <{ticket.requester}>" if name else ticket.requester


def starter_embed(ticket: TicketDetail, due: Sequence[str] = ()) -> discord.Embed:
    """The post's first message: the ticket at a glance, edited whenever the ticket changes."""
    embed = discord.Embed(title=truncate(f"[{ticket.ref}] {ticket.subject}", TITLE_MAX),
                          colour=STATUS_COLOURS.get(ticket.status, discord.Colour.default()))
    embed.add_field(name="Requester", value=truncate(requester_line(ticket), FIELD_VALUE_MAX), inline=False)
    embed.add_field(name="Status", value=status_label(ticket.status))
    embed.add_field(name="Priority", value=ticket.priority)
    embed.add_field(name="Category", value=ticket.category or "—")
    embed.add_field(name="Assignee", value=truncate(ticket.assignee or "unassigned", FIELD_VALUE_MAX))
    embed.add_field(name="Opened", value=when(ticket.created_at))
    embed.add_field(name="First response", value=when(ticket.first_response_at))
    if due:
        embed.add_field(name="Due", value=truncate("\n".join(due), FIELD_VALUE_MAX), inline=False)
    if ticket.tags:
        embed.add_field(name="Tags", value=truncate(", ".join(ticket.tags), FIELD_VALUE_MAX), inline=False)
    others = [p for p in ticket.participants if p != ticket.requester]
    if others:
        embed.add_field(name="Also in copy", value=truncate(", ".join(others), FIELD_VALUE_MAX), inline=False)
    if ticket.follow_up_of is not None:
        embed.add_field(name="Linked to", value=str(ticket.follow_up_of), inline=False)
    if ticket.merged_into is not None:
        embed.add_field(name="Merged into", value=str(ticket.merged_into), inline=False)
    embed.set_footer(text="Plain chat in this post stays internal: only /reply reaches the customer.")
    return embed


def message_embeds(message: MessageView, *, ref: str) -> list[discord.Embed]:
    """One embed per chunk of the message's new text (quotes and signature left out)."""
    heading, colour = KIND_STYLE.get(message.direction, ("Message", discord.Colour.default()))
    if message.is_machine:
        heading += " (automatic mail)"
    text = message.new_text.strip() or message.text.strip() or "(no text)"
    chunks = split_text(text)
    embeds = []
    for index, chunk in enumerate(chunks, 1):
        embed = discord.Embed(description=chunk, colour=colour, timestamp=message.created_at)
        embed.set_author(name=truncate(f"{heading} · {message.author}", AUTHOR_MAX))
        part = f" · part {index} of {len(chunks)}" if len(chunks) > 1 else ""
        embed.set_footer(text=f"{ref}{part}")
        embeds.append(embed)
    return embeds


def needs_full_text(message: MessageView) -> bool:
    """Attach the whole mail when the embeds show only part of it (long, or quotes cut off)."""
    shown = message.new_text.strip() or message.text.strip()
    return len(shown) > CHUNK or (message.direction == "inbound" and message.text.strip() != shown)


def format_size(size: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return f"{size:.1f} GiB"


def ticket_line(ticket: TicketSummary, thread_id: int | None) -> str:
    where = f" <#{thread_id}>" if thread_id else ""
    who = ticket.assignee or "unassigned"
    return truncate(f"**{ticket.ref}** {ticket.subject} · {status_label(ticket.status)} · {ticket.priority} · "
                    f"{who}{where}", 300)


def ticket_list_embed(title: str, tickets: Sequence[TicketSummary], threads: dict[int, int],
                      page: int, has_more: bool) -> discord.Embed:
    lines = [ticket_line(t, threads.get(t.number)) for t in tickets] or ["No tickets match."]
    embed = discord.Embed(title=truncate(title, TITLE_MAX), description=truncate("\n".join(lines), DESCRIPTION_MAX))
    embed.set_footer(text=f"page {page + 1}" + (" · more on the next page" if has_more else ""))
    return embed


def detail_embed(ticket: TicketDetail, thread_id: int | None, due: Sequence[str] = ()) -> discord.Embed:
    embed = starter_embed(ticket, due)
    if thread_id:
        embed.description = f"Post: <#{thread_id}>"
    latest = ticket.messages[-3:]
    for m in latest:
        heading = KIND_STYLE.get(m.direction, ("Message", None))[0]
        embed.add_field(name=truncate(f"{heading} · {m.author}", 256),
                        value=truncate(m.new_text.strip() or m.text.strip() or "(no text)", 300), inline=False)
    embed.set_footer(text=f"{len(ticket.messages)} message(s)")
    return embed


def duration(value: timedelta | None) -> str:
    if value is None:
        return "—"
    minutes = int(value.total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def stats_embed(stats: DeskStats) -> discord.Embed:
    embed = discord.Embed(title="Desk figures")
    by_status = ", ".join(f"{status_label(s)} {n}" for s, n in sorted(stats.by_status.items())) or "none"
    by_priority = ", ".join(f"{p} {n}" for p, n in sorted(stats.active_by_priority.items())) or "none"
    embed.add_field(name="Tickets by status", value=by_status, inline=False)
    embed.add_field(name="Active by priority", value=by_priority, inline=False)
    embed.add_field(name="Active and unassigned", value=str(stats.active_unassigned))
    embed.add_field(name="Opened (24 h / 7 days)", value=f"{stats.opened_last_day} / {stats.opened_last_week}")
    embed.add_field(name="Closed (7 days)", value=str(stats.closed_last_week))
    embed.add_field(name="Mean first response (7 days)", value=duration(stats.mean_first_response))
    sla = stats.sla_last_week
    if sla.met or sla.breached or sla.at_risk:
        percent = f" ({sla.met_percent}% met)" if sla.met_percent is not None else ""
        value = f"met {sla.met} · breached {sla.breached}{percent} · at risk now {sla.at_risk}"
    else:
        value = "no SLA clocks in this period"
    embed.add_field(name="SLA (7 days)", value=value, inline=False)
    return embed


def summary_embed(report: Any, desk_name: str = "") -> discord.Embed:
    """The daily report (core.reports.DailyReport) as an embed; the chart goes in as chart.png."""
    def counts(name: str) -> str:
        today, before, week = (getattr(x, name) for x in (report.today, report.previous, report.week_average))
        return f"**{today}** (day before {before}, 7-day avg {week:.1f})"

    def took(stats: Any) -> str:
        if not stats.count:
            return "none that day"
        median = duration(timedelta(seconds=stats.median_seconds))
        p90 = duration(timedelta(seconds=stats.p90_seconds))
        return f"median {median} · 90% within {p90} ({stats.count})"

    title = f"Daily summary · {report.day:%A %d %B %Y}"
    embed = discord.Embed(title=truncate(f"{desk_name} · {title}" if desk_name else title, 256))
    for label, name in (("Opened", "opened"), ("Reopened", "reopened"), ("Resolved", "resolved"),
                        ("Closed", "closed")):
        embed.add_field(name=label, value=counts(name), inline=True)
    backlog = report.backlog
    by_status = ", ".join(f"{status_label(s)} {n}" for s, n in sorted(backlog.by_status.items())) or "none"
    embed.add_field(name=f"Open backlog: {backlog.total}", value=by_status, inline=False)
    embed.add_field(name="First response", value=took(report.first_response), inline=False)
    embed.add_field(name="Resolution", value=took(report.resolution), inline=False)
    sla = report.sla
    embed.add_field(name="SLA", value=(f"breached {sla.breached} · at risk {sla.at_risk}" if sla is not None
                                       else report.sla_note), inline=False)
    if report.oldest:
        oldest = "\n".join(truncate(f"#{t.number} · {t.status} · {t.subject}", 120) for t in report.oldest[:5])
        embed.add_field(name="Oldest open", value=truncate(oldest, 1024), inline=False)
    embed.set_image(url="attachment://chart.png")
    embed.set_footer(text=f"{report.timezone} · 14-day volume and backlog below")
    return embed


def summary_message(report: Any, chart: bytes) -> dict[str, Any]:
    """What to send for the daily report: the embed, and its chart when one was drawn (without the
    `chart` extra there is none, and the embed says so instead of showing a broken image)."""
    embed = summary_embed(report)
    if not chart:
        embed.set_image(url=None)
        embed.set_footer(text=f"{report.timezone} · no chart: install supportbot[chart] to draw it")
        return {"embed": embed}
    return {"embed": embed, "file": discord.File(io.BytesIO(chart), "chart.png")}
