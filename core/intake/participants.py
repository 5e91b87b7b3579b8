"""Who a mail is from, and who else becomes a participant of its ticket."""

from __future__ import annotations

from core import addresses
from core.intake.settings import IntakeSettings
from core.parsed_mail import ParsedMail
from core.services import ContactRef

# Other recipients looked at in one mail: thousands of Cc is a mailing, and the caps of the ticket
# (IntakeSettings.max_cc_per_mail, max_participants_per_ticket) admit far fewer anyway.
MAX_LOOKED_AT = 100


def sender_of(mail: ParsedMail, envelope_from: str | None) -> str | None:
    """The From address, else the envelope sender; None when neither is one plain address."""
    for candidate in (mail.from_.email if mail.from_ else None, envelope_from):
        address = addresses.normalize(candidate)
        if address is not None:
            return address
    return None


def other_recipients(mail: ParsedMail, settings: IntakeSettings, sender: str) -> list[ContactRef]:
    """Everyone else the customer wrote to, except our own addresses, in order (the services admit
    the first of them up to the caps, and name the rest to staff)."""
    seen = {sender}
    refs: list[ContactRef] = []
    for address in [*mail.to, *mail.cc]:
        email = addresses.normalize(address.email)
        if email is None or email in seen or email in settings.own:
            continue
        seen.add(email)
        refs.append(ContactRef(email, address.name or ""))
        if len(refs) == MAX_LOOKED_AT:
            break
    return refs
