"""The [sla] config section: documented defaults, parsed policies, clear errors, and when the part runs."""

from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path

import pytest

from core.desk import Desk
from core.enums import Priority
from core.sla.scheduler import SlaScheduler
from supportbot.config import (
    BusinessHoursConfig,
    ConfigError,
    SlaConfig,
    SlaPolicyConfig,
    load_config,
)
from supportbot.sla_wiring import sla_part

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "supportbot.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_documents_every_sla_key_with_its_default():
    example = (REPO / "config.example.toml").read_text(encoding="utf-8")
    section = example[example.index("[sla]"):]
    for key in [*SlaConfig.model_fields, *BusinessHoursConfig.model_fields, *SlaPolicyConfig.model_fields]:
        assert f"{key} =" in section or f"[sla.{key}" in section, key  # a key, or a table of its own
    assert load_config(REPO / "config.example.toml").sla == SlaConfig()
    assert not SlaConfig().settings("UTC").enabled


def test_policies_business_hours_and_auto_close_are_parsed(tmp_path):
    config = load_config(write(tmp_path, """
[desk]
timezone = "Europe/Paris"
[sla]
holidays = [2026-12-25, "2027-01-01"]
resolved_close_after = "2d"
on_call_role_id = 77
[sla.business_hours]
sat = "10:00-12:00"
[sla.policies.urgent]
first_response = "1h"
resolution = "1d 2h"
business_hours = false
"""))
    settings = config.sla.settings(config.desk.timezone)
    urgent = settings.policies[Priority.URGENT]
    assert (urgent.first_response, urgent.next_response, urgent.resolution) == \
        (timedelta(hours=1), None, timedelta(hours=26))
    assert settings.auto_close.resolved_close_after == timedelta(days=2) and settings.on_call_role_id == 77
    assert settings.calendar is None  # no policy counts business hours

    config = load_config(write(tmp_path, """
[desk]
timezone = "Europe/Paris"
[sla]
holidays = [2026-12-25]
[sla.policies.high]
first_response = "4h"
"""))
    calendar = config.sla.settings(config.desk.timezone).calendar
    assert calendar is not None and calendar.tz.key == "Europe/Paris"
    assert calendar.holidays == {date(2026, 12, 25)}


@pytest.mark.parametrize(("text", "key"), [
    ('[sla.policies.high]\nfirst_response = "soon"', "sla.policies.high.first_response"),
    ('[sla.business_hours]\nmon = "9-5"', "sla.business_hours.mon"),
    ('[sla]\nholidays = ["25/12/2026"]', "sla.holidays"),
    ('[sla]\nat_risk_share = 1.5', "sla.at_risk_share"),
    ('[sla.policies.critical]\nfirst_response = "1h"', "sla.policies.critical"),
    ('[sla.policies.high]\nfirst_respons = "1h"', "sla.policies.high.first_respons"),
])
def test_bad_sla_config_names_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(write(tmp_path, text))


async def test_sla_part_is_skipped_with_one_log_line_when_nothing_is_configured(tmp_path, caplog):
    desk = Desk.open(f"sqlite+aiosqlite:///{tmp_path / 'desk.db'}", tmp_path)  # never connects here
    config = load_config(write(tmp_path, ""))
    with caplog.at_level(logging.INFO, logger="supportbot.sla_wiring"):
        assert sla_part(config, desk) is None
    assert len([r for r in caplog.records if "SLA" in r.getMessage()]) == 1

    config = load_config(write(tmp_path, '[sla]\npending_resolve_after = "3d"'))
    part = sla_part(config, desk)
    assert isinstance(part, SlaScheduler) and part.name == "sla"
    await desk.close()
