"""Email addresses as the desk compares them: one normal form, and plus-addressing read in one place."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

MAX_ADDRESS = 320  # RFC 3696: 64 for the local part, 255 for the domain


def normalize(address: str | None) -> str | None:
    """The address lowercased and without angle brackets, or None when it is not one plain address."""
    email = (address or "").strip().strip("<>").strip().lower()
    if email.count("@") != 1 or len(email) > MAX_ADDRESS or any(c in email for c in " \t\r\n<>"):
        return None
    local, _, domain = email.partition("@")
    return email if local and domain else None


# Domains where one address says nothing about the next: anyone can have an account there.
PUBLIC_PROVIDERS = frozenset({
    "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com", "msn.com", "yahoo.com",
    "ymail.com", "icloud.com", "me.com", "mac.com", "aol.com", "gmx.com", "gmx.de", "gmx.net", "web.de",
    "proton.me", "protonmail.com", "pm.me", "mail.com", "zoho.com", "yandex.com", "yandex.ru", "mail.ru",
    "qq.com", "163.com", "126.com", "fastmail.com", "tutanota.com", "t-online.de", "orange.fr", "free.fr",
    "laposte.net", "libero.it", "btinternet.com", "comcast.net", "att.net", "verizon.net",
})


def same_organisation(one: str, other: str) -> bool:
    """Both addresses at one company's own domain (not a public mail provider's)."""
    domain = one.strip().lower().rpartition("@")[2]
    return bool(domain) and domain == other.strip().lower().rpartition("@")[2] and domain not in PUBLIC_PROVIDERS


def without_tag(address: str) -> str:
    """`support+anything@x` -> `support@x` (plus-addressing); the address itself when it has no tag."""
    local, at, domain = address.strip().lower().partition("@")
    return f"{local.partition('+')[0]}{at}{domain}"


def tag_of(address: str) -> str:
    """What follows the `+` in the local part ("" when none)."""
    return address.strip().lower().partition("@")[0].partition("+")[2]


@dataclass(frozen=True)
class OwnAddresses:
    """The desk's own addresses: mail to any of them, or to a plus-variant, is mail to the desk."""

    addresses: frozenset[str]

    @classmethod
    def of(cls, addresses: Iterable[str]) -> OwnAddresses:
        return cls(frozenset(a.strip().lower() for a in addresses))

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str) or "@" not in address:
            return False
        email = address.strip().lower()
        return email in self.addresses or without_tag(email) in self.addresses


def redact(address: str) -> str:
    """`a***@example.com`: enough to tell addresses apart in logs, not enough to harvest them."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


_ADDRESS_IN_TEXT = re.compile(r"([A-Za-z0-9.!#$%&'*+/=?^_`{|}~-])[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]*@")


def redact_addresses(text: str) -> str:
    """Every address in free text (a relay's error message) shortened to `a***@domain` for logs."""
    return _ADDRESS_IN_TEXT.sub(r"\1***@", text)
