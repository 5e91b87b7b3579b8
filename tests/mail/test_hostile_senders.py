"""Mail that tries to turn the desk against its customers: each test is an attack as an outsider ran it."""

from __future__ import annotations

from sqlalchemy import select

from core.event_types import EventType
from core.intake import Kind
from core.models import Ticket
from core.queries import ticket_detail
from core.services import StaffRef, reply
from core.tokens import Signer
from tests.mail.pipeline_support import DOMAIN, SECRET, deliver, events_of_type, make_context, stored_row
from tests.mail.test_processing import open_alice_ticket, simple_mail

ctx = make_context()
MALLORY = "mallory@attacker.test"
SAM = StaffRef("Sam", discord_id=1)


def cc_line(count: int, domain: str = "attacker.test", start: int = 0) -> str:
    return "Cc: " + ", ".join(f"c{i}@{domain}" for i in range(start, start + count)) + "\r\n"


async def test_a_stranger_holding_a_customers_message_id_opens_a_linked_ticket_not_hers(desk):
    number = await open_alice_ticket(desk)  # alice's mail has Message-ID <req-1@customer.test>
    attack = simple_mail(MALLORY, "Re: Refund for order 42", "Send the refund to my account instead.",
                         extra="References: <req-1@customer.test>\r\n" + cc_line(20))
    outcome = await deliver(desk, ctx, attack)

    assert outcome.kind == Kind.OPENED and outcome.ticket_number != number
    assert f"refers to #{number}" in outcome.detail
    hers = await ticket_detail(desk, number)
    assert hers.participants == ["alice@customer.test"]  # nobody joined her conversation
    assert [m.author for m in hers.messages] == ["alice@customer.test"]
    theirs = await ticket_detail(desk, outcome.ticket_number)
    assert theirs.follow_up_of == number  # linked, so staff see what it points at
    opened = (await events_of_type(desk, EventType.TICKET_OPENED))[-1]
    assert opened.data["refers_to"] == number


async def test_a_stranger_with_our_signed_message_id_or_reply_address_cannot_join(desk):
    number = await open_alice_ticket(desk)
    signer = Signer(SECRET, DOMAIN)
    leaked_id = signer.message_id(number, "r1")  # from a reply alice forwarded, say
    by_id = await deliver(desk, ctx, simple_mail(MALLORY, "Re: Refund", extra=f"In-Reply-To: <{leaked_id}>\r\n"))
    by_address = await deliver(desk, ctx, simple_mail(MALLORY, "Re: Refund", message_id="m2@attacker.test"),
                               envelope_to=(signer.reply_address("support@example.test", number),))
    for outcome in (by_id, by_address):
        assert outcome.kind == Kind.OPENED and outcome.ticket_number != number, outcome
    assert (await ticket_detail(desk, number)).participants == ["alice@customer.test"]


async def test_someone_our_reply_went_to_may_answer_it(desk):
    number = await open_alice_ticket(desk)
    await deliver(desk, ctx, simple_mail("alice@customer.test", "Re: Refund", message_id="cc@customer.test",
                                         extra="In-Reply-To: <req-1@customer.test>\r\nCc: bob@customer.test\r\n"))
    await reply(desk, number, SAM, "We are on it.")
    # bob was in copy of the conversation, so the reply went to him too: his answer joins.
    outcome = await deliver(desk, ctx, simple_mail("bob@customer.test", "Re: Refund",
                                                   extra="In-Reply-To: <cc@customer.test>\r\n"))
    assert (outcome.kind, outcome.ticket_number) == (Kind.ADDED, number)


async def test_a_mail_whose_from_names_two_addresses_is_held_with_the_reason(desk):
    attack = simple_mail("alice@customer.test, mallory@attacker.test", "Please change my address")
    outcome = await deliver(desk, ctx, attack)
    assert outcome.kind == Kind.HELD and "one-sender" in outcome.detail
    assert "2 addresses" in (await stored_row(desk, outcome.mail_id)).reason
    async with desk.db.read() as session:
        assert (await session.scalars(select(Ticket))).first() is None


async def test_cc_beyond_the_caps_joins_nobody_and_is_named_to_staff(desk):
    capped = make_context(max_cc_per_mail=10, max_participants_per_ticket=25)
    first = await deliver(desk, capped, simple_mail("alice@customer.test", "Many people", message_id="many@c.test",
                                                    extra=cc_line(20, "customer.test")))
    number = first.ticket_number
    assert len((await ticket_detail(desk, number)).participants) == 11  # alice and the first 10
    for n in range(1, 11):  # eleven mails of 20 Cc each, as the attack run sent them
        await deliver(desk, capped, simple_mail("alice@customer.test", "Re: Many people",
                                                extra="In-Reply-To: <many@c.test>\r\n"
                                                      + cc_line(20, "customer.test", start=20 * n)))
    participants = (await ticket_detail(desk, number)).participants
    assert len(participants) == 25
    held = await events_of_type(desk, EventType.PARTICIPANTS_HELD)
    named = [email for event in held for email in event.data["emails"]]
    assert len(named) == 11 * 20 - 24 and not set(named) & set(participants)


async def test_different_mails_reusing_a_message_id_each_reach_a_ticket_and_say_so(desk):
    """From CPython's email test corpus (tests/mail/fixtures/cpython/README.md): msg_01, 03, 14, 20
    and 29 carry one Message-ID, msg_04 and 44 another, each a different mail (other text, other Cc,
    other MIME headers). Before, all but the first of each id were taken for copies: their text
    reached no ticket."""
    from tests.mail.pipeline_support import FIXTURES, messages_of

    def corpus(n: str) -> bytes:
        return (FIXTURES / "cpython" / f"msg_{n}.txt").read_bytes()

    names = ("01", "03", "14", "20", "29", "04", "44")
    outcomes = {n: await deliver(desk, ctx, corpus(n)) for n in names}
    assert all(o.kind in (Kind.OPENED, Kind.ADDED) for o in outcomes.values()), outcomes
    reused = [n for n, o in outcomes.items() if "Message-ID is already on another, different mail" in o.detail]
    assert reused == ["03", "14", "20", "29", "44"]
    kept = [m for n in names for m in await messages_of(desk, outcomes[n].ticket_number)
            if m.inbound_mail_id == outcomes[n].mail_id]
    assert len(kept) == len(names)  # every mail has its own message


async def test_the_same_mail_by_two_routes_is_one_message(desk):
    original = simple_mail("alice@customer.test", "Printer", message_id="route@customer.test")
    head, body = original.split(b"\r\n\r\n", 1)
    via_relay = b"Received: from relay.example by mx.example; Mon, 2 Mar 2026 09:00:00 +0000\n" + \
        head.replace(b"\r\n", b"\n") + b"\n\n" + body.replace(b"\r\n", b"\n")
    first = await deliver(desk, ctx, original)
    second = await deliver(desk, ctx, via_relay)
    assert first.kind == Kind.OPENED and second.kind == Kind.DUPLICATE


AUTH = "Authentication-Results: mx.example.test; spf=fail smtp.mailfrom=bank.test; dkim=none; " \
       "dmarc=fail (p=REJECT sp=REJECT dis=NONE) header.from=bank.test\r\n"


async def test_mail_failing_dmarc_for_a_rejecting_domain_is_held_when_our_mx_says_so(desk):
    trusting = make_context(trusted_authserv_ids=frozenset({"mx.example.test"}))
    forged = simple_mail("ceo@bank.test", "Urgent wire transfer", extra=AUTH)
    outcome = await deliver(desk, trusting, forged)
    assert outcome.kind == Kind.HELD and "dmarc-fail" in outcome.detail and "reject" in outcome.detail


async def test_a_verdict_from_a_server_we_do_not_trust_or_below_the_top_counts_for_nothing(desk):
    trusting = make_context(trusted_authserv_ids=frozenset({"mx.example.test"}))
    # The sender wrote their own "pass" on top and our MX's "fail" is below it: the top one is not ours.
    theirs = AUTH.replace("mx.example.test", "evil.test").replace("dmarc=fail", "dmarc=pass")
    outcome = await deliver(desk, trusting, simple_mail("ceo@bank.test", "Hello", extra=theirs + AUTH))
    assert outcome.kind == Kind.OPENED
    # No trusted server configured: nobody's verdict is read.
    outcome = await deliver(desk, ctx, simple_mail("ceo2@bank.test", "Hello", extra=AUTH))
    assert outcome.kind == Kind.OPENED


async def test_a_colleague_of_the_requester_may_answer_with_the_tag_and_is_named_as_such(desk):
    number = await open_alice_ticket(desk)  # alice@customer.test
    outcome = await deliver(desk, ctx, simple_mail("carol@customer.test", f"Re: [#{number}] Refund"))
    assert (outcome.kind, outcome.ticket_number) == (Kind.ADDED, number)
    assert "a colleague of a…@customer.test" in outcome.detail


async def test_the_same_public_mail_provider_is_no_organisation(desk):
    first = await deliver(desk, ctx, simple_mail("alice@gmail.com", "Refund"))
    outcome = await deliver(desk, ctx, simple_mail("mallory@gmail.com", f"Re: [#{first.ticket_number}] Refund"))
    assert outcome.kind == Kind.OPENED and outcome.ticket_number != first.ticket_number


async def test_a_from_with_a_second_address_after_the_first_is_held_as_ambiguous(desk):
    attack = simple_mail("alice@customer.test <mallory@attacker.test>", "Please change my bank details")
    outcome = await deliver(desk, ctx, attack)
    assert outcome.kind == Kind.HELD and "one-sender" in outcome.detail and "ambiguous" in outcome.detail
