"""Mail out, wired from the config: the composer, the notifier consumer and the outbox sender parts."""

from __future__ import annotations

import logging
from datetime import timedelta

from core.background import Background
from core.desk import Desk
from core.events import run_consumer
from core.mail_drafts import AddressIdentity
from core.notifier import (
    CONSUMER,
    Notifier,
    default_expectation,
    expectation_from_sla,
)
from core.outbox import RetryPolicy
from core.tokens import Signer
from mail_gateway.outbound.compose import Composer, DkimKey
from mail_gateway.outbound.maildir import MaildirTransport
from mail_gateway.outbound.sender import OutboxSender
from mail_gateway.outbound.smtp import RelaySettings, SmtpTransport
from mail_gateway.outbound.transport import Transport
from supportbot.config import Config
from supportbot.templating import template_environment

log = logging.getLogger(__name__)


def build_composer(config: Config, secret: bytes) -> Composer:
    support = config.mail.support_addresses[0]
    domain = support.partition("@")[2]
    outbound = config.mail.outbound
    dkim = None
    if outbound.dkim_selector and outbound.dkim_private_key:
        dkim = DkimKey.load(outbound.dkim_selector, domain, outbound.dkim_private_key)
    return Composer(signer=Signer(secret, domain), support_address=support, desk_name=config.desk.name,
                    from_name=config.mail.from_name or config.desk.name,
                    templates=template_environment(outbound.templates_dir), dkim_key=dkim)


def build_notifier(config: Config, desk: Desk, secret: bytes) -> Notifier:
    # The [sla] section comes with the SLA work; until Config has it, acks use the plain sentence.
    sla = getattr(config, "sla", None)
    expectation = expectation_from_sla(sla.settings(config.desk.timezone)) if sla is not None else default_expectation
    return Notifier(desk, build_composer(config, secret), support_addresses=config.mail.support_addresses,
                    automatic_per_hour=config.mail.outbound.max_automatic_per_recipient_per_hour,
                    automatic_total_per_hour=config.mail.outbound.max_automatic_per_hour,
                    quote_customer=config.mail.outbound.acknowledgement_quotes_customer, expectation=expectation,
                    identities=address_identities(config))


def address_identities(config: Config) -> dict[str, AddressIdentity]:
    """[mail.addresses."…"]: the display name and signature of the mail sent from each support address."""
    return {address: AddressIdentity(name=identity.name, signature=identity.signature)
            for address, identity in config.mail.addresses.items()}


def build_transport(config: Config) -> Transport:
    outbound = config.mail.outbound
    if not outbound.host:
        return MaildirTransport(config.desk.data_dir / "outbox-maildir")
    return SmtpTransport(RelaySettings(
        host=outbound.host, port=outbound.port, security=outbound.security, username=outbound.username,
        password=outbound.password, timeout_seconds=outbound.timeout_seconds, ca_file=outbound.ca_file,
        local_hostname=config.mail.support_addresses[0].partition("@")[2] or None))


def retry_policy(config: Config) -> RetryPolicy:
    outbound = config.mail.outbound
    return RetryPolicy(initial=timedelta(seconds=outbound.retry_initial_seconds),
                       maximum=timedelta(seconds=outbound.retry_max_seconds),
                       give_up_after=timedelta(hours=outbound.give_up_after_hours),
                       # Renewed every quarter while a batch is out; a crashed sender's mail goes again after it.
                       lease=timedelta(seconds=max(60, outbound.timeout_seconds * 2)))


class NotifierPart:
    """Runs the notifier as the event consumer "mail-notifier" (from its persisted cursor)."""

    name = CONSUMER

    def __init__(self, desk: Desk, notifier: Notifier) -> None:
        self.desk = desk
        self.notifier = notifier
        self._background = Background()

    async def start(self) -> None:
        self._background.start(run_consumer(self.desk.db, CONSUMER, self.notifier.handle, clock=self.desk.clock,
                                            stop=self._background.stopping), CONSUMER)

    async def stop(self) -> None:
        await self._background.stop()


def notifier_part(config: Config, desk: Desk, secret: bytes) -> NotifierPart:
    return NotifierPart(desk, build_notifier(config, desk, secret))


def sender_part(config: Config, desk: Desk) -> OutboxSender:
    return OutboxSender(desk, build_transport(config), retry_policy(config))
