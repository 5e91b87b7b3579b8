"""Settings the inbound mail pipeline acts on, built once from the config by the composition root."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from core.enums import Priority
from mail_gateway.tokens import Signer


@dataclass(frozen=True)
class KeywordRule:
    """Words in a new ticket's subject or body that set its category and/or priority."""

    words: tuple[str, ...]
    category: str | None = None
    priority: Priority | None = None


@dataclass(frozen=True)
class InboundContext:
    signer: Signer
    support_addresses: tuple[str, ...] = ("support@localhost",)
    max_message_bytes: int = 35 * 1024 * 1024
    max_attachment_bytes: int = 25 * 1024 * 1024
    new_tickets_per_sender: int = 5
    new_tickets_window: timedelta = timedelta(minutes=10)
    category_by_address: Mapping[str, str] = field(default_factory=dict)
    keyword_rules: tuple[KeywordRule, ...] = ()
    # Parsing runs in a thread; a mail that takes longer is quarantined (the thread runs out alone).
    parse_timeout_seconds: float = 30.0

    def is_support_address(self, address: str) -> bool:
        """One of ours, or a plus-addressed form of one (support+anything@domain), any case."""
        local, at, domain = address.strip().lower().partition("@")
        if not at:
            return False
        base = f"{local.partition('+')[0]}@{domain}"
        return base in self.support_addresses
