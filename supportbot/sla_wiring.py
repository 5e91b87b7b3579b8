"""SLA wiring from the config: the part that runs the "sla" consumer and the timer scheduler."""

from __future__ import annotations

import logging

from core.desk import Desk
from core.sla.scheduler import SlaScheduler
from supportbot.config import Config

log = logging.getLogger(__name__)


def sla_part(config: Config, desk: Desk) -> SlaScheduler | None:
    """Runs only when [sla] has a policy or an auto-close step; otherwise says so once."""
    settings = config.sla.settings(config.desk.timezone)
    if not settings.enabled:
        log.info("SLA: no policies and no auto-close in [sla]; not tracking response times")
        return None
    return SlaScheduler(desk, settings, poll_seconds=config.sla.poll_seconds)
