"""Configuration: defaults, files, environment secrets, and errors that name key, value and expectation."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from supportbot.cli import main
from supportbot.config import Config, ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf" / "supportbot.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def test_built_in_defaults_use_sqlite_in_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(None, environ={})
    assert config.desk.data_dir == tmp_path / "supportbot-data"
    assert config.database_url == f"sqlite+aiosqlite:///{tmp_path / 'supportbot-data' / 'desk.db'}"
    assert config.mail.smtp_listener.host == "127.0.0.1"


def test_the_example_config_documents_every_key_with_its_default():
    example = tomllib.loads((REPO / "config.example.toml").read_text())
    parsed = Config.model_validate(example)
    defaults = Config()
    assert parsed.model_dump(exclude={"source"}) == defaults.model_dump(exclude={"source"})

    def keys(model, prefix=""):
        for name in type(model).model_fields:
            value = getattr(model, name)
            if hasattr(type(value), "model_fields"):
                yield from keys(value, f"{prefix}{name}.")
            elif name != "source":
                yield f"{prefix}{name}"

    def present(data, dotted):
        node = data
        for part in dotted.split("."):
            if part not in node:
                return False
            node = node[part]
        return True

    text = (REPO / "config.example.toml").read_text()
    # Keys without a value by default (TOML has no null) are shown commented out: "# key = …".
    missing = [k for k in keys(defaults) if not present(example, k)
               and f"# {k.rsplit('.', 1)[-1]} = " not in text and f"[[{k}]]" not in text]
    assert missing == []


def test_relative_paths_are_relative_to_the_config_file(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    path = write(tmp_path, 'log_level = "debug"\n[desk]\ndata_dir = "state"\n')
    config = load_config(path, environ={})
    assert config.desk.data_dir == tmp_path / "conf" / "state"


def test_secrets_come_from_the_environment(tmp_path):
    path = write(tmp_path, "[discord]\nguild_id = 5\n")
    config = load_config(path, environ={"SUPPORTBOT_DISCORD_TOKEN": "tok", "SUPPORTBOT_SMTP_PASSWORD": "pw",
                                        "SUPPORTBOT_DATABASE_URL": "postgresql+asyncpg://u@127.0.0.1/db"})
    assert config.discord.token == "tok"
    assert config.mail.outbound.password == "pw"
    assert config.database_url == "postgresql+asyncpg://u@127.0.0.1/db"


@pytest.mark.parametrize(("text", "expected"), [
    ("[mail.smtp_listener]\nport = \"lots\"\n", "mail.smtp_listener.port = 'lots': expected a valid integer"),
    ("[mail.smtp_listener]\nport = 70000\n", "mail.smtp_listener.port = 70000: expected"),
    ("[desk]\ndefault_priority = \"sky-high\"\n",
     "desk.default_priority = 'sky-high': expected 'low', 'medium', 'high' or 'urgent'"),
    ("[desk]\ntimezone = \"Mars/Olympus\"\n", "desk.timezone = 'Mars/Olympus': expected an IANA time zone"),
    ("[desk]\ncategoreis = []\n", "desk.categoreis: unknown key"),
    ("[mail]\nsupport_addresses = [\"not an address\"]\n", "mail.support_addresses = ['not an address']"),
    ("[desk\n", "is not valid TOML"),
])
def test_a_bad_config_names_the_key_the_value_and_what_is_expected(tmp_path, text, expected):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text), environ={})
    assert expected in str(error.value)


def test_secrets_are_never_echoed_in_config_errors(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, "[discord]\ntoken = 12345\n"), environ={})
    assert "12345" not in str(error.value) and "discord.token = <secret>" in str(error.value)


def test_the_command_stops_with_a_clear_message_and_no_traceback(tmp_path, capsys):
    path = write(tmp_path, "[http]\nport = -1\n")
    assert main(["--config", str(path), "tickets", "list"]) == 78
    err = capsys.readouterr().err
    assert "http.port = -1: expected greater than or equal to 0" in err
    assert "Traceback" not in err


def test_a_missing_config_file_says_how_to_make_one(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "nope.toml"), "check"]) == 78
    assert "supportbot init" in capsys.readouterr().err


def test_per_address_settings_name_an_address_that_is_no_support_address_in_the_error(tmp_path):
    text = ('[mail]\nsupport_addresses = ["support@example.com", "billing@example.com"]\n'
            '[mail.addresses."sales@example.com"]\nname = "Sales"\n')
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text), environ={})
    assert 'mail.addresses."sales@example.com" is not one of mail.support_addresses' in str(error.value)
    assert "mail.addresses = " in str(error.value)


def test_per_address_name_and_signature_are_read_and_an_unknown_key_is_refused(tmp_path):
    text = ('[mail]\nsupport_addresses = ["support@example.com", "billing@example.com"]\n'
            '[mail.addresses."Billing@Example.com"]\nname = "Example Billing"\nsignature = "The billing team"\n')
    config = load_config(write(tmp_path, text), environ={})
    billing = config.mail.addresses["billing@example.com"]
    assert (billing.name, billing.signature) == ("Example Billing", "The billing team")
    assert Config().mail.addresses == {}
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text + 'signtaure = "x"\n'), environ={})
    assert 'mail.addresses.billing@example.com.signtaure: unknown key' in str(error.value).replace(
        "Billing@Example.com", "billing@example.com")


def test_trusted_authentication_servers_reach_intake():
    from supportbot.mail_wiring import intake_settings

    config = Config.model_validate({"mail": {"trusted_authserv_ids": ["MX.Example.COM "]}})
    assert intake_settings(config, b"k" * 32).trusted_authserv_ids == frozenset({"mx.example.com"})
