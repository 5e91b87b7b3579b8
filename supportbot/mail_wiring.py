"""Mail in, wired from the config: intake's settings, the hand-off for one-off commands, the SMTP listener."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from core.desk import Desk
from core.enums import Priority
from core.intake import Intake, IntakeSettings, KeywordRule
from core.tokens import Signer
from mail_gateway.handoff import Handoff
from mail_gateway.smtp_listener import SessionLimits, SmtpListener, tls_context
from supportbot.config import Config

log = logging.getLogger(__name__)


def intake_settings(config: Config, secret: bytes) -> IntakeSettings:
    mail = config.mail
    domain = mail.support_addresses[0].partition("@")[2]
    return IntakeSettings(
        signer=Signer(secret, domain), support_addresses=mail.support_addresses,
        max_message_bytes=mail.smtp_listener.max_message_bytes, max_attachment_bytes=mail.max_attachment_bytes,
        new_tickets_per_sender=mail.new_tickets_per_sender,
        new_tickets_window=timedelta(minutes=mail.new_tickets_window_minutes),
        trusted_authserv_ids=frozenset(a.strip().lower() for a in mail.trusted_authserv_ids),
        max_cc_per_mail=mail.max_cc_per_mail, max_participants_per_ticket=mail.max_participants_per_ticket,
        category_by_address=dict(mail.category_by_address),
        keyword_rules=tuple(KeywordRule(r.words, r.category or None, Priority(r.priority) if r.priority else None)
                            for r in mail.keyword_rules),
        parse_timeout_seconds=mail.processing_timeout_seconds,
    )


def handoff(desk: Desk, settings: IntakeSettings) -> Handoff:
    """Stored mail to intake, parsing on threads: for `supportbot ingest` and the retry command."""
    return Handoff(Intake(desk, settings))


def smtp_listener_part(config: Config, desk: Desk, *, on_stored: Callable[[], None]) -> SmtpListener | None:
    listener = config.mail.smtp_listener
    if not listener.enabled:
        log.info("SMTP listener disabled (mail.smtp_listener.enabled = false)")
        return None
    tls = None
    if listener.tls_certificate is not None and listener.tls_key is not None:
        tls = tls_context(listener.tls_certificate, listener.tls_key)
    limits = SessionLimits(max_sessions=listener.max_sessions, max_sessions_per_client=listener.max_sessions_per_client,
                           idle_timeout_seconds=listener.idle_timeout_seconds,
                           max_commands_without_progress=listener.max_commands_without_progress,
                           max_line_bytes=listener.max_line_bytes)
    return SmtpListener(desk, config.mail.support_addresses, host=listener.host, port=listener.port,
                        max_message_bytes=listener.max_message_bytes, tls=tls, on_stored=on_stored,
                        lmtp=listener.protocol == "lmtp", limits=limits)
