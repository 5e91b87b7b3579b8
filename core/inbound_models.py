"""Indexes the inbound mail pipeline needs on tables defined elsewhere."""

from __future__ import annotations

from sqlalchemy import Index

from core.models import InboundMail, Message

# Processing checks "did a message already come from this stored mail?" before acting, so that a
# crash between the ticket service's commit and the status update replays harmlessly; without
# this index that check would read the whole messages table for every mail.
MESSAGES_BY_INBOUND_MAIL = Index("ix_messages_inbound_mail_id", Message.inbound_mail_id)

# Finding other copies of a mail by key, and whether one is still waiting or in someone's hands
# (claiming, duplicate checks, the store's "seen before?"), as point lookups.
INBOUND_BY_KEY_AND_STATUS = Index("ix_inbound_mail_dedupe_key_status", InboundMail.dedupe_key, InboundMail.status)

__all__ = ["INBOUND_BY_KEY_AND_STATUS", "MESSAGES_BY_INBOUND_MAIL"]
