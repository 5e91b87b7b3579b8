"""Indexes the inbound mail pipeline needs on tables defined elsewhere."""

from __future__ import annotations

from sqlalchemy import Index

from core.models import Message

# Processing checks "did a message already come from this stored mail?" before acting, so that a
# crash between the ticket service's commit and the status update replays harmlessly; without
# this index that check would read the whole messages table for every mail.
MESSAGES_BY_INBOUND_MAIL = Index("ix_messages_inbound_mail_id", Message.inbound_mail_id)

__all__ = ["MESSAGES_BY_INBOUND_MAIL"]
