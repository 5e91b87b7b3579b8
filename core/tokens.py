"""HMAC-signed reply tokens and Message-IDs: how a customer's answer finds its ticket again."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from core.addresses import tag_of

SIGNATURE_CHARS = 16  # base32 characters: 80 bits, plenty against guessing
_TOKEN = re.compile(rf"^(\d{{1,12}})-([a-z2-7]{{{SIGNATURE_CHARS}}})$")
_MESSAGE_ID = re.compile(rf"^t(\d{{1,12}})\.([a-z0-9]{{1,40}})\.([a-z2-7]{{{SIGNATURE_CHARS}}})@")


@dataclass(frozen=True)
class Signer:
    """Signs with the desk's secret; tokens survive case-folding MTAs (all lowercase)."""

    secret: bytes
    domain: str

    def _sign(self, text: str) -> str:
        digest = hmac.new(self.secret, text.encode(), hashlib.sha256).digest()
        return base64.b32encode(digest).decode().lower()[:SIGNATURE_CHARS]

    def ticket_token(self, ticket_number: int) -> str:
        return f"{ticket_number}-{self._sign(f'ticket:{ticket_number}')}"

    def reply_address(self, support_address: str, ticket_number: int) -> str:
        local, _, domain = support_address.partition("@")
        return f"{local}+{self.ticket_token(ticket_number)}@{domain}"

    def message_id(self, ticket_number: int, key: str | None = None) -> str:
        """`t{ticket}.{key}.{sig}@{domain}` without angle brackets; key defaults to a random one."""
        key = (key or secrets.token_hex(8)).lower()
        if not re.fullmatch(r"[a-z0-9]{1,40}", key):
            raise ValueError("message id key must be 1-40 lowercase letters or digits")
        return f"t{ticket_number}.{key}.{self._sign(f'msgid:{ticket_number}.{key}')}@{self.domain}"

    def ticket_from_token(self, token: str) -> int | None:
        match = _TOKEN.match(token.strip().lower())
        if not match:
            return None
        number = int(match.group(1))
        return number if hmac.compare_digest(match.group(2), self._sign(f"ticket:{number}")) else None

    def ticket_from_address(self, address: str) -> int | None:
        """The ticket in `local+TOKEN@domain`, if the token is ours and genuine."""
        token = tag_of(address)
        return self.ticket_from_token(token) if token else None

    def ticket_from_message_id(self, message_id: str) -> int | None:
        match = _MESSAGE_ID.match(message_id.strip().strip("<>").lower())
        if not match:
            return None
        number, key, signature = int(match.group(1)), match.group(2), match.group(3)
        expected = self._sign(f"msgid:{number}.{key}")
        return number if hmac.compare_digest(signature, expected) else None


# The token as it appears in a mail body footer: "ref:1042-abcdefghijklmnop".
FOOTER_TOKEN = re.compile(rf"\bref:(\d{{1,12}}-[a-z2-7]{{{SIGNATURE_CHARS}}})\b", re.IGNORECASE)
