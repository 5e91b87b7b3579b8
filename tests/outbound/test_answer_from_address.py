"""Answer from where they wrote: a ticket remembers the support address its first mail reached, and
every mail about it goes From that address (its name, its signature), Reply-To its signed form."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from sqlalchemy import select

from core.desk import Desk
from core.intake import IntakeSettings, Kind
from core.intake.routing import support_address
from core.mail_drafts import AddressIdentity
from core.models import Ticket
from core.notifier import Notifier
from core.outbox import RetryPolicy
from core.services import ContactRef, MailContent, StaffRef, open_ticket, reply
from core.tokens import Signer
from mail_gateway.outbound.sender import OutboxSender
from supportbot.config import load_config
from supportbot.outbound import address_identities, build_composer
from tests.mail.pipeline_support import deliver, make_context
from tests.outbound.conftest import SECRET, SUPPORT, MailOut, Sink, make_composer, relay_to

BILLING = "billing@example.test"
CUSTOMER = "carla@example.org"
BOB = StaffRef("Bob", discord_id=42)
SIGNER = Signer(SECRET, "example.test")


def intake_settings() -> IntakeSettings:
    return make_context(signer=SIGNER, support_addresses=(SUPPORT, BILLING))


def mail_out_for(desk: Desk, sink: Sink) -> MailOut:
    billing = AddressIdentity("Example Billing", "Example Billing\nInvoices and refunds")
    notifier = Notifier(desk, make_composer(), support_addresses=[SUPPORT, BILLING], automatic_per_hour=10,
                        identities={BILLING: billing})
    return MailOut(desk, notifier, OutboxSender(desk, relay_to(sink), RetryPolicy()))


def customer_mail(to: str, subject: str, text: str, *, cc: str | None = None, in_reply_to: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Carla Customer <{CUSTOMER}>"
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="example.org")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    msg.set_content(text)
    return bytes(msg)


async def ticket_address(desk: Desk, number: int) -> str | None:
    async with desk.db.read() as session:
        return await session.scalar(select(Ticket.support_address).where(Ticket.number == number))


async def test_mail_to_billing_is_acknowledged_and_answered_from_billing_and_the_answer_threads_back(
        desk: Desk, sink: Sink) -> None:
    ctx, out = intake_settings(), mail_out_for(desk, sink)
    opened = await deliver(desk, ctx, customer_mail(BILLING, "Invoice twice", "You charged me twice."),
                           envelope_to=(BILLING,))
    assert opened.kind == Kind.OPENED and opened.ticket_number is not None
    number = opened.ticket_number
    assert await ticket_address(desk, number) == BILLING

    await out.flush()
    await reply(desk, number, BOB, "Refunded the second charge.")
    await out.flush()
    assert len(sink.received) == 2
    reply_address = SIGNER.reply_address(BILLING, number)
    assert reply_address.startswith("billing+")
    for got in sink.received:  # the acknowledgement, then the staff reply
        msg = got.message
        assert got.mail_from == BILLING and got.rcpt_tos == [CUSTOMER]
        assert msg["From"] == f"Example Billing <{BILLING}>"
        assert msg["Reply-To"] == f"Example Billing <{reply_address}>"
        assert msg["X-Loop"] == BILLING
        text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")  # type: ignore[union-attr]
        assert "Example Billing\nInvoices and refunds" in text
        html_body = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
        assert "Invoices and refunds" in html_body
    ack, staff_reply = (got.message for got in sink.received)
    assert "Refunded the second charge." in staff_reply.get_body(("plain",)).get_content()  # type: ignore[union-attr]

    # The customer answers as a mail client does: to the Reply-To, in reply to the staff mail.
    answer = await deliver(desk, ctx, customer_mail(reply_address, f"Re: {staff_reply['Subject']}", "Thanks!",
                                                    in_reply_to=staff_reply["Message-ID"]),
                           envelope_to=(reply_address,))
    assert (answer.kind, answer.ticket_number) == (Kind.ADDED, number)
    assert await ticket_address(desk, number) == BILLING


async def test_mail_to_support_is_still_answered_from_support(desk: Desk, sink: Sink) -> None:
    ctx, out = intake_settings(), mail_out_for(desk, sink)
    opened = await deliver(desk, ctx, customer_mail(SUPPORT, "Printer", "It burns."))
    assert opened.ticket_number is not None
    assert await ticket_address(desk, opened.ticket_number) == SUPPORT
    await reply(desk, opened.ticket_number, BOB, "Unplug it.")
    await out.flush()
    assert len(sink.received) == 2
    for got in sink.received:
        assert got.mail_from == SUPPORT
        assert got.message["From"] == f"Example Support <{SUPPORT}>"
        assert got.message["Reply-To"] == f"Example Support <{SIGNER.reply_address(SUPPORT, opened.ticket_number)}>"
        text = got.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert "Invoices and refunds" not in text and "Example Support" in text


async def test_a_plus_tag_or_a_cc_to_billing_is_billing_and_staff_tickets_answer_from_the_first_address(
        desk: Desk, sink: Sink) -> None:
    ctx, out = intake_settings(), mail_out_for(desk, sink)
    tagged = await deliver(desk, ctx, customer_mail("Billing <Billing+Urgent@Example.Test>", "Refund", "Please."),
                           envelope_to=("billing+urgent@example.test",))
    assert tagged.ticket_number is not None and await ticket_address(desk, tagged.ticket_number) == BILLING
    copied = await deliver(desk, ctx, customer_mail("boss@example.org", "Invoice", "See Cc.", cc=BILLING),
                           envelope_to=(BILLING,))
    assert copied.ticket_number is not None and await ticket_address(desk, copied.ticket_number) == BILLING
    # Reached none of our addresses by its headers (a Bcc with no trace): nothing remembered, the first answers.
    elsewhere = await deliver(desk, ctx, customer_mail("someone@example.org", "Hello", "Hi."),
                              envelope_to=("other@example.org",))
    assert elsewhere.ticket_number is not None and await ticket_address(desk, elsewhere.ticket_number) is None
    by_staff = await open_ticket(desk, ContactRef("dan@example.org"), MailContent(text="Call me", subject="Call"))
    assert by_staff.ticket.support_address is None
    await out.flush()
    froms = sorted((got.message["Subject"].split("] ", 1)[1], got.mail_from) for got in sink.received)
    assert froms == [("Call", SUPPORT), ("Hello", SUPPORT), ("Invoice", BILLING), ("Refund", BILLING)]


async def test_an_address_no_longer_configured_falls_back_to_the_first(desk: Desk, sink: Sink) -> None:
    opened = await deliver(desk, intake_settings(), customer_mail(BILLING, "Invoice", "Twice."),
                           envelope_to=(BILLING,))
    assert opened.ticket_number is not None
    notifier = Notifier(desk, make_composer(), support_addresses=[SUPPORT], automatic_per_hour=10)
    await MailOut(desk, notifier, OutboxSender(desk, relay_to(sink), RetryPolicy())).flush()
    [got] = sink.received
    assert got.mail_from == SUPPORT and got.message["From"] == f"Example Support <{SUPPORT}>"


def test_the_support_address_is_picked_from_the_recipients_in_order() -> None:
    ctx = intake_settings()
    assert support_address(ctx, ["friend@example.org", "BILLING+x@example.test", SUPPORT]) == BILLING
    assert support_address(ctx, ["not an address", SUPPORT]) == SUPPORT
    assert support_address(ctx, ["friend@example.org"]) is None


def test_per_address_name_and_signature_are_wired_from_the_config(tmp_path: Path) -> None:
    path = tmp_path / "supportbot.toml"
    path.write_text('[mail]\nsupport_addresses = ["help@example.test", "billing@example.test"]\n'
                    'from_name = "Example Help"\n'
                    '[mail.addresses."Billing@Example.test"]\nname = "Example Billing"\nsignature = "Billing team"\n')
    config = load_config(path, environ={})
    assert address_identities(config) == {"billing@example.test": AddressIdentity("Example Billing", "Billing team")}
    assert build_composer(config, b"k").from_name == "Example Help"
