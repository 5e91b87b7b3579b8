"""Mail in, wired from the config: the pipeline's settings, the inbound worker and the SMTP listener parts."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from core.enums import Priority
from mail_gateway.inbound_context import InboundContext, KeywordRule
from mail_gateway.smtp_listener import SmtpListener, tls_context
from mail_gateway.tokens import Signer
from mail_gateway.worker import InboundWorker
from supportbot.config import Config

if TYPE_CHECKING:
    from supportbot.app import App

log = logging.getLogger(__name__)


def inbound_context(config: Config, secret: bytes) -> InboundContext:
    mail = config.mail
    domain = mail.support_addresses[0].partition("@")[2]
    return InboundContext(
        signer=Signer(secret, domain), support_addresses=mail.support_addresses,
        max_message_bytes=mail.smtp_listener.max_message_bytes, max_attachment_bytes=mail.max_attachment_bytes,
        new_tickets_per_sender=mail.new_tickets_per_sender,
        new_tickets_window=timedelta(minutes=mail.new_tickets_window_minutes),
        category_by_address=dict(mail.category_by_address),
        keyword_rules=tuple(KeywordRule(r.words, r.category or None, Priority(r.priority) if r.priority else None)
                            for r in mail.keyword_rules),
        parse_timeout_seconds=mail.processing_timeout_seconds,
    )


def _wake_workers(app: App) -> None:
    # Looked up at call time: parts are built one after another.
    for part in app.parts:
        if isinstance(part, InboundWorker):
            part.wake()


async def inbound_worker_part(app: App) -> InboundWorker:
    from supportbot.app import desk_secret

    ctx = inbound_context(app.config, desk_secret(app.config))
    return InboundWorker(app.desk, ctx, poll_seconds=app.config.mail.inbound_poll_seconds)


async def smtp_listener_part(app: App) -> SmtpListener | None:
    from supportbot.app import desk_secret

    listener = app.config.mail.smtp_listener
    if not listener.enabled:
        log.info("SMTP listener disabled (mail.smtp_listener.enabled = false)")
        return None
    tls = None
    if listener.tls_certificate is not None and listener.tls_key is not None:
        tls = tls_context(listener.tls_certificate, listener.tls_key)
    return SmtpListener(app.desk, inbound_context(app.config, desk_secret(app.config)), host=listener.host,
                        port=listener.port, max_message_bytes=listener.max_message_bytes, tls=tls,
                        on_stored=lambda: _wake_workers(app), lmtp=listener.protocol == "lmtp")
