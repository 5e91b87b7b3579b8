"""`supportbot report daily`: print a day's report, write its HTML and chart, or mail it now."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import UserError
from supportbot.cli import build_parser, dispatch
from supportbot.config import Config
from tests.outbound.conftest import Sink
from tests.reports.test_report_figures import build_monday


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the CLI does not depend on the engine, and every report draws a chart.

    The figures and the schedule's claims run on both engines in the other report tests.
    """
    return f"sqlite+aiosqlite:///{tmp_path / 'desk.db'}"


def cli_config(desk, tmp_path: Path, **outbound: object) -> Config:
    return Config.model_validate({
        "desk": {"name": "Acme Support", "data_dir": str(tmp_path / "data"),
                 "database_url": desk.db.url.render_as_string(hide_password=False)},
        "mail": {"support_addresses": ["support@example.test"], "outbound": outbound},
        "reports": {"managers": ["boss@example.test"], "timezone": "UTC"},
    })


async def run_cli(config: Config, *argv: str) -> int:
    return await dispatch(build_parser().parse_args(list(argv)), config)


async def test_report_daily_prints_the_text_report_of_the_given_day(desk, clock, tmp_path, capsys):
    await build_monday(desk, clock)
    html, chart = tmp_path / "r.html", tmp_path / "r.png"
    config = cli_config(desk, tmp_path)
    assert await run_cli(config, "report", "daily", "--date", "2026-03-02", "--html", str(html),
                         "--chart", str(chart)) == 0
    out = capsys.readouterr().out
    assert out.startswith("Acme Support - daily report for Monday 2 March 2026 (UTC)")
    assert "Reopened                1         0    +1        0.0   +1.0" in out
    assert 'src="r.png"' in html.read_text()
    assert chart.read_bytes().startswith(b"\x89PNG")


async def test_report_daily_send_mails_the_managers_through_the_outbox(desk, clock, tmp_path, capsys):
    await build_monday(desk, clock)
    sink = Sink().start()
    try:
        config = cli_config(desk, tmp_path, host="127.0.0.1", port=sink.port, security="plain",
                            timeout_seconds=5)
        assert await run_cli(config, "report", "daily", "--date", "2026-03-02", "--send") == 0
        assert "queued as outbox mail" in capsys.readouterr().out
        [received] = sink.received
        assert received.rcpt_tos == ["boss@example.test"]
        assert received.message["Subject"] == "Acme Support: daily report for Mon 2 Mar 2026"
    finally:
        sink.stop()


async def test_report_daily_refuses_to_send_a_day_not_over_yet(desk, tmp_path):
    config = cli_config(desk, tmp_path)
    with pytest.raises(UserError, match="not over yet"):
        await run_cli(config, "report", "daily", "--date", "2999-01-01", "--send")


def test_report_daily_rejects_a_malformed_date(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["report", "daily", "--date", "02/03/2026"])
    assert "not a date (YYYY-MM-DD)" in capsys.readouterr().err
