"""What intake acts on, built once from the config by the composition root."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property

from core.addresses import OwnAddresses
from core.enums import Priority
from core.tokens import Signer


@dataclass(frozen=True)
class KeywordRule:
    """Words in a new ticket's subject or body that set its category and/or priority."""

    words: tuple[str, ...]
    category: str | None = None
    priority: Priority | None = None


@dataclass(frozen=True)
class IntakeSettings:
    signer: Signer
    support_addresses: tuple[str, ...] = ("support@localhost",)
    max_message_bytes: int = 35 * 1024 * 1024
    max_attachment_bytes: int = 25 * 1024 * 1024
    new_tickets_per_sender: int = 5
    new_tickets_window: timedelta = timedelta(minutes=10)
    # Receiving servers whose Authentication-Results headers we believe (their authserv-id, lowercase).
    trusted_authserv_ids: frozenset[str] = frozenset()
    max_cc_per_mail: int = 10
    max_participants_per_ticket: int = 25
    category_by_address: Mapping[str, str] = field(default_factory=dict)
    keyword_rules: tuple[KeywordRule, ...] = ()
    # The edge's parse budget: a mail that takes longer is quarantined with this as the reason.
    parse_timeout_seconds: float = 30.0

    @cached_property
    def own(self) -> OwnAddresses:
        return OwnAddresses.of(self.support_addresses)

    def is_support_address(self, address: str) -> bool:
        """One of ours, or a plus-addressed form of one (support+anything@domain), any case."""
        return address in self.own
