"""End to end over real sockets: mail in by SMTP -> forum post -> /reply -> the customer's mailbox -> the
customer's answer in the same post. discord.py talks HTTP and websocket to a fake Discord on loopback;
mail goes through our SMTP listener, and out through Postfix into Dovecot.
"""

from __future__ import annotations

import asyncio
import email
import smtplib
from collections.abc import AsyncIterator, Iterator
from email import policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

import pytest
from imapclient import IMAPClient

from supportbot.app import run
from supportbot.config import Config
from tests.bot.fake_discord import FakeDiscord
from tests.kit import eventually
from tests.servers import Dovecot, Postfix, dovecot_and_postfix, free_ports

pytestmark = [pytest.mark.dovecot, pytest.mark.slow]

SUPPORT = "support@example.test"
CUSTOMER = "customer@example.org"
USERS = {SUPPORT: "secret", CUSTOMER: "secret"}


@pytest.fixture
def mail_servers() -> Iterator[tuple[Dovecot, Postfix]]:
    with dovecot_and_postfix(USERS) as both:
        yield both


@pytest.fixture
async def discord_fake() -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()
    assert fake.unknown == [], f"the bot called routes the fake does not know: {fake.unknown}"


def customer_mailbox(dovecot: Dovecot) -> list[EmailMessage]:
    with IMAPClient(dovecot.host, dovecot.imap_port, ssl=False, timeout=5) as client:
        client.login(CUSTOMER, USERS[CUSTOMER])
        client.select_folder("INBOX", readonly=True)
        fetched = client.fetch(client.search(["ALL"]), ["BODY.PEEK[]"])
    return [email.message_from_bytes(fetched[uid][b"BODY[]"], policy=policy.default)  # type: ignore[misc]
            for uid in sorted(fetched)]


def send_to_desk(port: int, subject: str, text: str, in_reply_to: str | None = None) -> None:
    msg = EmailMessage()
    msg["From"] = f"Carla Customer <{CUSTOMER}>"
    msg["To"] = SUPPORT
    msg["Subject"] = subject
    msg["Date"] = formatdate()
    msg["Message-ID"] = make_msgid(domain="example.org")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    msg.set_content(text)
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.send_message(msg, from_addr=CUSTOMER, to_addrs=[SUPPORT])


def desk_config(tmp_path: Path, fake: FakeDiscord, postfix: Postfix, smtp_port: int, forum: int, alerts: int,
                staff: int) -> Config:
    return Config.model_validate({
        "desk": {"data_dir": str(tmp_path / "data")},
        "mail": {"support_addresses": [SUPPORT], "secret": "e2e-secret",
                 "smtp_listener": {"host": "127.0.0.1", "port": smtp_port},
                 "outbound": {"host": postfix.host, "port": postfix.smtp_port, "security": "plain"}},
        "discord": {"token": "fake-token", "guild_id": fake.guild_id, "forum_channel_id": forum,
                    "alerts_channel_id": alerts, "staff_role_ids": [staff], "projector_poll_seconds": 0.5},
        "http": {"enabled": False},
    })


def embed_texts(fake: FakeDiscord, channel_id: int) -> list[str]:
    return [e["description"] for m in fake.messages.get(channel_id, []) for e in m.get("embeds", [])
            if e.get("description")]


async def test_mail_to_post_to_reply_to_mailbox_and_back_into_the_same_post(tmp_path, mail_servers, discord_fake):
    dovecot, postfix = mail_servers
    fake = discord_fake
    forum, alerts = fake.add_channel("tickets", 15), fake.add_channel("alerts", 0)
    staff = fake.add_role("staff")
    alice = fake.add_user("alice", [staff])
    (smtp_port,) = free_ports(1)
    ready, stop = asyncio.Event(), asyncio.Event()
    app = asyncio.create_task(run(desk_config(tmp_path, fake, postfix, smtp_port, forum, alerts, staff),
                                  ready=ready, stop=stop))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        await asyncio.wait_for(fake.identified.wait(), 30)

        await asyncio.to_thread(send_to_desk, smtp_port, "Printer on fire", "My printer is on fire. Help!")
        (post,) = await eventually(lambda: fake.threads_of(forum), until=lambda posts: len(posts) == 1,
                                   timeout=20)
        thread_id = int(post["id"])
        assert post["name"].endswith("] Printer on fire")
        await eventually(lambda: embed_texts(fake, thread_id),
                         until=lambda texts: "My printer is on fire. Help!" in texts, timeout=20)

        answer = await fake.slash(alice, thread_id, "reply", text="Unplug it, please.")
        assert answer.text.startswith("Reply to #") and "queued for mail" in answer.text

        def ours_in(mails: list[EmailMessage]) -> list[EmailMessage]:
            return [m for m in mails if "Unplug it, please." in str(m.get_body(("plain",)).get_content())]

        mails = await eventually(lambda: asyncio.to_thread(customer_mailbox, dovecot), until=ours_in,
                                 timeout=30)
        ours = ours_in(mails)[0]

        await asyncio.to_thread(send_to_desk, smtp_port, "Re: " + ours["Subject"], "Unplugged. Smoke is gone.",
                                ours["Message-ID"])
        await eventually(lambda: embed_texts(fake, thread_id),
                         until=lambda texts: "Unplugged. Smoke is gone." in texts, timeout=20)
        assert len(fake.threads_of(forum)) == 1
        assert embed_texts(fake, thread_id) == [
            "My printer is on fire. Help!", "Unplug it, please.", "Unplugged. Smoke is gone."]
        assert all(m["allowed_mentions"] == {"parse": []} for m in fake.messages[thread_id][1:])
    finally:
        stop.set()
        await asyncio.wait_for(app, 30)
