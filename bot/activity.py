"""The short lines the projector posts for ticket activity, alerts and SLA warnings, from typed events."""

from __future__ import annotations

from collections.abc import Callable

import discord

from bot.format import status_label, truncate
from core.event_types import (
    Assigned,
    CategoryChanged,
    EventType,
    MailBounced,
    MailHeld,
    MailQuarantined,
    Merged,
    OutboundFailed,
    ParticipantAdded,
    ParticipantsHeld,
    PriorityChanged,
    SlaAtRisk,
    SlaBreached,
    StatusChanged,
    StatusReason,
    TagsChanged,
    Unassigned,
    typed,
)
from core.models import Event

ALERT_EVENTS = {EventType.OUTBOUND_FAILED, EventType.MAIL_BOUNCED, EventType.MAIL_QUARANTINED}
SLA_EVENTS = {EventType.SLA_AT_RISK, EventType.SLA_BREACHED}
# Auto-replies and list mail can come by the hundred: they are counted in the daily report instead.
HELD_WITHOUT_ALERT = {"machine-mail"}


def activity_line(event: Event, who: str, ref: Callable[[int], str], alert: str) -> str | None:
    """What changed and who did it; None for events that need no line in the post."""
    match typed(event):
        case StatusChanged(from_=old, to=new, reason=reason):
            why = f" ({reason})" if event.actor_staff_id is None and reason != StatusReason.UNKNOWN else ""
            return f"Status: {status_label(old)} → **{status_label(new)}** by {who}{why}"
        case Assigned(to=name):
            return f"Assigned to **{name}** by {who}"
        case Unassigned():
            return f"Unassigned by {who}"
        case PriorityChanged(from_=old, to=new):
            return f"Priority: {old} → **{new}** by {who}"
        case CategoryChanged(from_=old, to=new):
            return f"Category: {old or '—'} → **{new or '—'}** by {who}"
        case TagsChanged(added=added, removed=removed):
            changes = [*(f"+{t}" for t in added or ()), *(f"-{t}" for t in removed or ())]
            return f"Tags {' '.join(changes)} by {who}"
        case Merged(from_=source, into=target):
            return f"{ref(source)} merged into **{ref(target)}** by {who}"
        case ParticipantAdded(email=email):
            return f"{email} is now in copy"
        case ParticipantsHeld(emails=emails, limit=limit):
            return truncate(f"Not added to the conversation ({limit}), so no reply goes to them: "
                            f"{', '.join(emails or ())}", 2000)
        case OutboundFailed() | MailBounced() | MailQuarantined():
            return f"⚠️ {alert}"
    return None


def alert_text(event: Event, ticket_ref: str | None) -> str:
    """Failed outbound mail, a bounce or a quarantined mail, for the alerts channel."""
    where = f" for {ticket_ref}" if ticket_ref else ""
    match typed(event):
        case OutboundFailed(attempts=attempts, kind=kind, error=error):
            return f"Outbound mail{where} failed after {attempts} attempt(s) ({kind}): {error or 'unknown error'}"
        case MailBounced(failed=failed):
            said = "; ".join(f"{f.get('status', '?')} {f.get('diagnostic', '')}".strip()
                             for f in failed or () if isinstance(f, dict))
            return f"Mail{where} bounced: {said or 'delivery failed'}"
        case MailQuarantined(mail_id=mail_id, reason=reason):
            return (f"Incoming mail {mail_id} was quarantined: {reason or 'no reason given'} "
                    "(kept, and can be reprocessed)")
    return f"{event.type}{where}"


def held_alert(event: Event) -> str | None:
    """A held mail for the alerts channel, with what staff need to release it or block its sender;
    None for holds that are only counted. Customer text is bounded (and never pings: see NO_PINGS)."""
    held = typed(event)
    assert isinstance(held, MailHeld)
    if held.rule in HELD_WITHOUT_ALERT:
        return None
    sender = discord.utils.escape_markdown(truncate(held.sender, 320)) if held.sender else "unknown sender"
    subject = discord.utils.escape_markdown(truncate(held.subject, 200)) if held.subject else "(no subject)"
    reason = discord.utils.escape_markdown(truncate(held.reason, 500)) if held.reason else "no reason given"
    text = (f"✋ Incoming mail {held.mail_id} was held ({held.rule or 'rule'}): {reason}\n"
            f"From: {sender} · Subject: {subject}")
    return truncate(text, 2000)


def sla_warning(event: Event) -> tuple[str, discord.AllowedMentions]:
    """At risk or breached, pinging the assignee (or the on-call role) and nobody else."""
    alert = typed(event)
    assert isinstance(alert, SlaAtRisk | SlaBreached)
    people = [discord.Object(int(alert.assignee_discord_id))] if alert.assignee_discord_id else []
    roles = [discord.Object(int(alert.on_call_role_id))] if alert.on_call_role_id else []
    pings = discord.AllowedMentions(everyone=False, users=people, roles=roles, replied_user=False)
    who = " ".join([*(f"<@{p.id}>" for p in people), *(f"<@&{r.id}>" for r in roles)])
    clock = alert.clock.replace("_", " ")
    due = (alert.due_at or "")[:16].replace("T", " ")
    if isinstance(alert, SlaBreached):
        raised = f"; priority raised to {alert.priority_raised_to}" if alert.priority_raised_to else ""
        text = f"🚨 {alert.ref} {clock} target missed (due {due} UTC){raised} {who}"
    else:
        text = f"⏰ {alert.ref} {clock} due {due} UTC: at risk {who}"
    return truncate(text.strip(), 2000), pings
