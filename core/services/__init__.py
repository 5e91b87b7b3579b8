"""One async function per use case; each runs in one transaction and records its events."""

from core.services._common import ContactRef, NewAttachment, StaffRef, find_contact, remember_contacts
from core.services.canned import get_snippet, list_snippets, remove_snippet, render_snippet, save_snippet
from core.services.contacts import block_sender, is_blocked, unblock_sender
from core.services.merge import merge
from core.services.tickets import (
    MailContent,
    NewTicket,
    ParticipantCaps,
    TicketChange,
    add_customer_message,
    add_note,
    open_ticket,
    open_tickets,
    reply,
)
from core.services.triage import assign, claim, set_category, set_priority, set_status, tag, unassign

__all__ = [
    "ContactRef", "MailContent", "NewAttachment", "NewTicket", "ParticipantCaps", "StaffRef", "TicketChange",
    "add_customer_message", "add_note", "assign", "block_sender", "claim", "find_contact", "get_snippet",
    "is_blocked",
    "list_snippets", "merge", "open_ticket", "open_tickets", "remember_contacts", "remove_snippet",
    "render_snippet", "reply", "save_snippet",
    "set_category", "set_priority", "set_status", "tag", "unassign", "unblock_sender",
]
