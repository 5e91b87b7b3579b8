"""Mail in through a pipe (`supportbot ingest`): store each mail, then process it right away."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from core.desk import Desk
from core.errors import describe_error
from core.intake import Kind
from mail_gateway.handoff import Handoff
from mail_gateway.store import store_received

log = logging.getLogger("mail_gateway.pipe")


@dataclass(frozen=True)
class Ingested:
    name: str  # the file name, or "stdin"
    stored: bool  # False: not stored, the MTA must try again
    line: str


async def ingest(desk: Desk, handoff: Handoff, mails: Sequence[tuple[str, bytes]], *,
                 envelope_from: str | None = None, envelope_to: Sequence[str] = ()) -> list[Ingested]:
    """Each mail on its own: one that cannot be stored does not stop the rest."""
    results: list[Ingested] = []
    for name, raw in mails:
        try:
            stored = await store_received(desk, raw, source="pipe", mailbox="pipe",
                                          envelope_from=envelope_from, envelope_to=envelope_to)
        except Exception as e:
            log.error("could not store %s (%d bytes): %s", name, len(raw), describe_error(e))
            results.append(Ingested(name, False, f"{name}: NOT stored ({describe_error(e)}); try again"))
            continue
        try:
            [outcome] = await handoff.take([stored.id])
            line = outcome.describe(desk.format_number)
            if outcome.kind == Kind.SKIPPED:  # a copy is being processed elsewhere: it finishes this one
                line = f"mail {stored.id}: stored; another process is taking it (or a copy of it) now"
        except Exception as e:  # stored is what counts: the worker of `supportbot run` finishes it
            log.error("mail %d stored but not processed: %s", stored.id, describe_error(e))
            line = f"mail {stored.id}: stored; processing deferred ({describe_error(e)})"
        results.append(Ingested(name, True, f"{name}: {line}"))
    return results
