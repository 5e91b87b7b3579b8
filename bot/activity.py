"""The short lines the projector posts for ticket activity, alerts and SLA warnings, from event data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import discord

from bot.format import status_label, truncate
from core.events import EventType
from core.models import Event

ALERT_EVENTS = {EventType.OUTBOUND_FAILED, EventType.MAIL_BOUNCED, EventType.MAIL_QUARANTINED}
SLA_EVENTS = {EventType.SLA_AT_RISK, EventType.SLA_BREACHED}


def activity_line(event: Event, who: str, ref: Callable[[int], str], alert: str) -> str | None:
    """What changed and who did it; None for events that need no line in the post."""
    data: dict[str, Any] = event.data or {}
    kind = event.type
    if kind == EventType.STATUS_CHANGED:
        why = f" ({data['reason']})" if data.get("reason") and event.actor_staff_id is None else ""
        return (f"Status: {status_label(str(data.get('from')))} → **{status_label(str(data.get('to')))}** "
                f"by {who}{why}")
    if kind == EventType.ASSIGNED:
        return f"Assigned to **{data.get('to')}** by {who}"
    if kind == EventType.UNASSIGNED:
        return f"Unassigned by {who}"
    if kind == EventType.PRIORITY_CHANGED:
        return f"Priority: {data.get('from')} → **{data.get('to')}** by {who}"
    if kind == EventType.CATEGORY_CHANGED:
        return f"Category: {data.get('from') or '—'} → **{data.get('to') or '—'}** by {who}"
    if kind == EventType.TAGS_CHANGED:
        changes = [*(f"+{t}" for t in data.get("added", [])), *(f"-{t}" for t in data.get("removed", []))]
        return f"Tags {' '.join(changes)} by {who}"
    if kind == EventType.MERGED:
        return f"{ref(data.get('from', 0))} merged into **{ref(data.get('into', 0))}** by {who}"
    if kind == EventType.PARTICIPANT_ADDED:
        return f"{data.get('email')} is now in copy"
    if kind in ALERT_EVENTS:
        return f"⚠️ {alert}"
    return None


def alert_text(event: Event, ticket_ref: str | None) -> str:
    """Failed outbound mail, a bounce or a quarantined mail, for the alerts channel."""
    data: dict[str, Any] = event.data or {}
    where = f" for {ticket_ref}" if ticket_ref else ""
    if event.type == EventType.OUTBOUND_FAILED:
        return (f"Outbound mail{where} failed after {data.get('attempts', '?')} attempt(s) "
                f"({data.get('kind', 'mail')}): {data.get('error', 'unknown error')}")
    if event.type == EventType.MAIL_BOUNCED:
        failed = "; ".join(f"{f.get('status', '?')} {f.get('diagnostic', '')}".strip()
                           for f in data.get("failed", []) if isinstance(f, dict))
        return f"Mail{where} bounced: {failed or 'delivery failed'}"
    return (f"Incoming mail {data.get('mail_id', '?')} was quarantined: {data.get('reason', 'no reason given')}"
            " (kept, and can be reprocessed)")


def sla_warning(event: Event) -> tuple[str, discord.AllowedMentions]:
    """At risk or breached, pinging the assignee (or the on-call role) and nobody else."""
    data: dict[str, Any] = event.data or {}
    people = [discord.Object(int(data["assignee_discord_id"]))] if data.get("assignee_discord_id") else []
    roles = [discord.Object(int(data["on_call_role_id"]))] if data.get("on_call_role_id") else []
    pings = discord.AllowedMentions(everyone=False, users=people, roles=roles, replied_user=False)
    who = " ".join([*(f"<@{p.id}>" for p in people), *(f"<@&{r.id}>" for r in roles)])
    clock = str(data.get("clock", "")).replace("_", " ")
    due = str(data.get("due_at") or "")[:16].replace("T", " ")
    if event.type == EventType.SLA_BREACHED:
        raised = f"; priority raised to {data['priority_raised_to']}" if data.get("priority_raised_to") else ""
        text = f"🚨 {data.get('ref', '')} {clock} target missed (due {due} UTC){raised} {who}"
    else:
        text = f"⏰ {data.get('ref', '')} {clock} due {due} UTC: at risk {who}"
    return truncate(text.strip(), 2000), pings
