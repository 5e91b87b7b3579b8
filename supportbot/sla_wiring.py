"""SLA wiring from the config: the part that runs the "sla" consumer and the timer scheduler."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from core.sla.scheduler import SlaScheduler

if TYPE_CHECKING:
    from supportbot.app import App

log = logging.getLogger(__name__)


async def sla_part(app: App) -> SlaScheduler | None:
    """Runs only when [sla] has a policy or an auto-close step; otherwise says so once."""
    settings = app.config.sla.settings(app.config.desk.timezone)
    if not settings.enabled:
        log.info("SLA: no policies and no auto-close in [sla]; not tracking response times")
        return None
    return SlaScheduler(app.desk, settings, poll_seconds=app.config.sla.poll_seconds)
