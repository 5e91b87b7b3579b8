"""SMTP relay transport (aiosmtplib): implicit TLS, STARTTLS or plain, with optional AUTH."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import aiosmtplib

from core.addresses import redact
from core.models import OutboxMail
from mail_gateway.outbound.transport import Failed, Outcome, Report, Retry, Sent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RelaySettings:
    host: str
    port: int = 587
    security: Literal["starttls", "tls", "plain"] = "starttls"
    username: str = ""
    password: str = ""
    timeout_seconds: float = 30
    ca_file: Path | None = None
    local_hostname: str | None = None


class SmtpTransport:
    """Sends a batch over one connection; classifies every failure as temporary or permanent."""

    def __init__(self, settings: RelaySettings) -> None:
        self.settings = settings
        self.description = f"SMTP relay {settings.host}:{settings.port} ({settings.security})"
        # Made once: loading the CA bundle costs more than a local SMTP transaction.
        self.tls_context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)

    def _client(self) -> aiosmtplib.SMTP:
        s = self.settings
        return aiosmtplib.SMTP(
            hostname=s.host, port=s.port, use_tls=s.security == "tls",
            start_tls=s.security == "starttls", tls_context=self.tls_context,
            username=s.username or None, password=s.password or None, timeout=s.timeout_seconds,
            local_hostname=s.local_hostname)

    async def deliver(self, batch: Sequence[OutboxMail], report: Report) -> None:
        """All of `batch` over one connection; each outcome is reported (and recorded) before the next mail."""
        client = self._client()
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError) as e:
            # Relay down, TLS or AUTH trouble: our side or the relay's, never the mail's fault.
            error = f"cannot reach {self.description}: {_describe(e)}"
            log.warning("%s", error)
            await _report_all(batch, Retry(error), report)
            return
        try:
            for index, mail in enumerate(batch):
                outcome = await self._send_one(client, mail)
                go_on = await report(mail, outcome)
                if isinstance(outcome, Retry) and not client.is_connected:
                    if go_on:
                        await _report_all(batch[index + 1:], Retry(outcome.error), report)
                    return
                if not go_on:
                    return
        finally:
            if client.is_connected:
                try:
                    await client.quit()
                except (aiosmtplib.SMTPException, OSError):
                    client.close()

    async def _send_one(self, client: aiosmtplib.SMTP, mail: OutboxMail) -> Outcome:
        try:
            refused, _response = await client.sendmail(mail.mail_from, mail.recipients, mail.content)
        except aiosmtplib.SMTPRecipientsRefused as e:
            codes = [r.code for r in e.recipients]
            error = "all recipients refused: " + "; ".join(
                f"{redact(r.recipient)} {r.code} {r.message}" for r in e.recipients)
            return Failed(error) if all(c >= 500 for c in codes) else Retry(error)
        except aiosmtplib.SMTPResponseException as e:
            error = f"{e.code} {e.message}"
            return Failed(error) if 500 <= e.code < 600 else Retry(error)
        except (aiosmtplib.SMTPException, OSError) as e:
            return Retry(_describe(e))
        if refused:
            # Delivered to the others; a later attempt would duplicate it for them.
            return Sent("refused by the relay: " + "; ".join(
                f"{redact(r)} {code} {msg}" for r, (code, msg) in refused.items()))
        return Sent()


async def _report_all(batch: Sequence[OutboxMail], outcome: Outcome, report: Report) -> None:
    for mail in batch:
        if not await report(mail, outcome):
            return


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:500]
