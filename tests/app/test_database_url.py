"""desk.database_url / SUPPORTBOT_DATABASE_URL is checked when the config loads, like every other key:
a URL the desk cannot run on stops `supportbot` with the key and what is expected, not an ArgumentError."""

from __future__ import annotations

import pytest

from supportbot.cli import EXIT_CONFIG, main
from supportbot.config import ConfigError, load_config

EXPECTED = ("expected a database URL such as 'postgresql+asyncpg://user:password@host:5432/dbname' or "
            "'sqlite+aiosqlite:////path/to/desk.db', or empty for SQLite in desk.data_dir")


@pytest.mark.parametrize(("url", "shown", "hint"), [
    ("not a url", "'not a url'", ""),
    ("sqlite:///desk.db", "'sqlite:///desk.db'", "; for SQLite write sqlite+aiosqlite://…"),
    ("postgresql://u:hunter2@db/desk", "'postgresql://u:***@db/desk'",
     "; for PostgreSQL write postgresql+asyncpg://…"),
    ("postgresql+psycopg2://u@db/desk", "'postgresql+psycopg2://u@db/desk'",
     "; for PostgreSQL write postgresql+asyncpg://…"),
    ("mysql+aiomysql://u@db/desk", "'mysql+aiomysql://u@db/desk'",
     "; 'mysql+aiomysql' is not a database this desk runs on"),
    ("sqlite+aiosqlite://", "'sqlite+aiosqlite://'", "; this one names no file"),
    ("postgresql+asyncpg//u:hunter2@db/desk", "'postgresql+asyncpg//u:***@db/desk'", ""),
])
def test_a_bad_database_url_is_a_config_error_naming_the_key(tmp_path, url, shown, hint):
    config = tmp_path / "supportbot.toml"
    config.write_text(f'[desk]\ndatabase_url = "{url}"\n')
    with pytest.raises(ConfigError) as e:
        load_config(config, environ={})
    assert str(e.value).startswith(
        f"invalid configuration in {config}:\n  desk.database_url = {shown}: {EXPECTED}{hint}")
    assert "hunter2" not in str(e.value)


def test_from_the_environment_it_names_the_variable_too(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(None, environ={"SUPPORTBOT_DATABASE_URL": "not a url"})
    assert str(e.value) == ("invalid configuration in the built-in defaults/environment:\n"
                            f"  desk.database_url = 'not a url' (from SUPPORTBOT_DATABASE_URL): {EXPECTED}")


def test_check_stops_at_the_config_step(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SUPPORTBOT_CONFIG", raising=False)
    monkeypatch.setenv("SUPPORTBOT_DATABASE_URL", "not a url")
    assert main(["check"]) == EXIT_CONFIG
    out = capsys.readouterr()
    assert out.out == ""  # not even "config: ok"
    assert out.err.startswith("supportbot: invalid configuration in the built-in defaults/environment:\n"
                              "  desk.database_url = 'not a url' (from SUPPORTBOT_DATABASE_URL): expected")
    assert "ArgumentError" not in out.err


@pytest.mark.parametrize("url", [
    "postgresql+asyncpg://supportbot:secret@127.0.0.1:5432/supportbot",
    "postgresql+asyncpg://supportbot@db",
    "sqlite+aiosqlite:////var/lib/supportbot/desk.db",
    "sqlite+aiosqlite:///desk.db",
])
def test_urls_the_desk_runs_on_load(url):
    assert load_config(None, environ={"SUPPORTBOT_DATABASE_URL": url}).database_url == url
