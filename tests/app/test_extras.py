"""Optional extras (chart, postgres, dkim): the base install works without them, and a feature that
needs a missing one says which extra to install instead of failing with a traceback."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
from datetime import date
from email import message_from_bytes, policy
from email.headerregistry import Address
from pathlib import Path

import pytest

from supportbot.cli import EXIT_CONFIG, main
from supportbot.config import Config, ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


def without(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make `modules` (and their submodules) unimportable for this test, as if not installed."""
    for name in [n for n in sys.modules if any(n == m or n.startswith(m + ".") for m in modules)]:
        monkeypatch.setitem(sys.modules, name, None)
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def test_a_postgresql_url_without_asyncpg_names_the_extra(tmp_path, monkeypatch, capsys):
    without(monkeypatch, "asyncpg")
    config = tmp_path / "supportbot.toml"
    config.write_text('[desk]\ndatabase_url = "postgresql+asyncpg://u:secret@127.0.0.1/db"\n')
    with pytest.raises(ConfigError) as e:
        load_config(config, environ={})
    assert str(e.value) == "desk.database_url needs the PostgreSQL driver: pip install 'supportbot[postgres]'"

    monkeypatch.setenv("SUPPORTBOT_DATABASE_URL", "postgresql+asyncpg://u:secret@127.0.0.1/db")
    assert main(["--config", str(tmp_path / "none.toml"), "check"]) == EXIT_CONFIG  # file missing: that first
    capsys.readouterr()
    config.write_text("")
    assert main(["--config", str(config), "check"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err == ("supportbot: desk.database_url (from SUPPORTBOT_DATABASE_URL) needs the PostgreSQL driver: "
                   "pip install 'supportbot[postgres]'\n")


def test_sqlite_needs_no_extra(tmp_path, monkeypatch):
    without(monkeypatch, "asyncpg", "dkim", "matplotlib")
    assert load_config(None, environ={}).database_url.startswith("sqlite+aiosqlite:///")


@pytest.mark.parametrize("outbound", [
    'dkim_selector = "mail"\ndkim_private_key = "dkim.pem"',
    'dkim_private_key = "dkim.pem"',
])
def test_dkim_signing_without_dkimpy_is_a_config_error_naming_the_key_and_extra(tmp_path, monkeypatch, outbound):
    without(monkeypatch, "dkim")
    config = tmp_path / "supportbot.toml"
    config.write_text(f"[mail.outbound]\n{outbound}\n")
    with pytest.raises(ConfigError) as e:
        load_config(config, environ={})
    assert "mail.outbound.dkim_private_key" in str(e.value)
    assert "pip install 'supportbot[dkim]'" in str(e.value)


def test_dkim_and_postgres_settings_load_when_their_extras_are_installed(tmp_path):
    config = tmp_path / "supportbot.toml"
    config.write_text('[desk]\ndatabase_url = "postgresql+asyncpg://u@127.0.0.1/db"\n'
                      '[mail.outbound]\ndkim_selector = "mail"\ndkim_private_key = "dkim.pem"\n')
    loaded = load_config(config, environ={})
    assert loaded.mail.outbound.dkim_private_key == tmp_path / "dkim.pem"


def test_the_daily_report_without_matplotlib_goes_out_without_its_chart(tmp_path, monkeypatch, caplog):
    from core.migrate import upgrade
    from supportbot.app import open_desk
    from supportbot.reporting import build_daily, compose_report_mail

    without(monkeypatch, "matplotlib")
    monkeypatch.delitem(sys.modules, "supportbot.report_chart", raising=False)  # imported afresh: fails
    config = Config.model_validate({"desk": {"data_dir": str(tmp_path / "data")}})

    async def go():
        desk = open_desk(config)
        try:
            await upgrade(desk.db)
            return await build_daily(desk, config, date(2026, 3, 2))
        finally:
            await desk.close()

    with caplog.at_level(logging.INFO, logger="supportbot"):
        rendered = asyncio.run(go())
    hints = [r for r in caplog.records if "supportbot[chart]" in r.getMessage()]
    assert len(hints) == 1 and hints[0].levelno == logging.WARNING, caplog.text
    assert rendered.chart_png == b""
    assert "daily report" in rendered.subject and "Monday 2 March 2026" in rendered.html  # templates rendered
    assert rendered.text.strip()
    assert "cid:" not in rendered.html  # no broken image where the chart would be

    content = compose_report_mail(rendered, sender=Address(addr_spec="support@localhost"),
                                  to=["boss@example.test"], message_id="<r@localhost>", sent_at=rendered.report.end)
    msg = message_from_bytes(content, policy=policy.SMTP)
    assert [p.get_content_type() for p in msg.walk()] == ["multipart/alternative", "text/plain", "text/html"]


# Every module of the four packages imports on a base install (no extras), except the chart
# drawing itself; core.migrations' env and revisions run only inside Alembic.
IMPORT_ALL = textwrap.dedent("""
    import importlib, importlib.abc, pathlib, sys

    BLOCKED = {"matplotlib", "asyncpg", "dkim"}

    class NotInstalled(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
    failed = []
    for root in ("core", "mail_gateway", "bot", "supportbot"):
        for path in sorted(pathlib.Path(root).rglob("*.py")):
            parts = list(path.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join(parts)
            if name.startswith("core.migrations.") or name.endswith("__main__"):
                continue
            try:
                importlib.import_module(name)
            except Exception as e:
                failed.append(f"{name}: {type(e).__name__}: {e}")
    print("".join(f + "\\n" for f in failed), end="")
""")


def test_every_module_imports_without_the_optional_extras():
    result = subprocess.run([sys.executable, "-c", IMPORT_ALL], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    failed = result.stdout.split("\n")[:-1]
    assert [f for f in failed if not f.startswith("supportbot.report_chart:")] == []
    assert any("matplotlib" in f for f in failed)  # the chart module itself does need it
