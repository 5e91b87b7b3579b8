"""Configuration: one TOML file (plus SUPPORTBOT_* environment secrets) loaded once into frozen objects."""

from __future__ import annotations

import os
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.desk import CoreSettings
from core.enums import Priority, Status

DEFAULT_CONFIG_NAME = "supportbot.toml"

# Secrets may live in the environment rather than in the file: variable -> (section path, key).
ENV_OVERRIDES: dict[str, tuple[tuple[str, ...], str]] = {
    "SUPPORTBOT_DATABASE_URL": (("desk",), "database_url"),
    "SUPPORTBOT_SECRET": (("mail",), "secret"),
    "SUPPORTBOT_SMTP_PASSWORD": (("mail", "outbound"), "password"),
    "SUPPORTBOT_DISCORD_TOKEN": (("discord",), "token"),
}


class ConfigError(Exception):
    """The configuration is unusable; the message names the key, the value and what is expected."""


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DeskConfig(Section):
    name: str = "Support"
    data_dir: Path = Path("supportbot-data")
    database_url: str = ""  # empty: SQLite file desk.db inside data_dir
    ticket_prefix: str = Field("#", max_length=10)
    first_ticket_number: int = Field(1000, ge=1)
    categories: tuple[str, ...] = ("general", "billing", "technical")
    default_priority: Priority = Priority.MEDIUM
    reopen_closed_within_days: float = Field(14, ge=0)
    status_after_reply: Status = Status.PENDING
    timezone: str = "UTC"

    @field_validator("categories")
    @classmethod
    def _categories(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(c.strip().lower() for c in value)
        if not cleaned or any(not c or len(c) > 100 for c in cleaned):
            raise ValueError("a non-empty list of category names (1-100 characters each)")
        return cleaned

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("an IANA time zone name such as 'Europe/Paris' or 'UTC'") from None
        return value


class SmtpListenerConfig(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(2525, ge=0, le=65535)
    max_message_bytes: int = Field(35 * 1024 * 1024, ge=1024)
    tls_certificate: Path | None = None
    tls_key: Path | None = None


class ImapMailboxConfig(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,49}$")  # also names the password variable
    host: str
    port: int = Field(993, ge=1, le=65535)
    security: Literal["tls", "starttls", "plain"] = "tls"
    username: str
    password: str = ""  # or SUPPORTBOT_IMAP_PASSWORD_<NAME>
    folder: str = "INBOX"
    processed_folder: str = ""  # move mail here after it is stored; empty: only flag \\Seen
    ca_file: Path | None = None
    timeout_seconds: float = Field(30, gt=0)
    idle: bool = True  # false: poll even when the server offers IDLE
    poll_seconds: float = Field(60, gt=0)  # when the server has no IDLE (or idle = false)
    idle_renew_seconds: float = Field(25 * 60, gt=0)  # servers drop IDLE after 29-30 minutes
    reconnect_max_seconds: float = Field(300, gt=0)  # backoff after a drop: 1 s, 2 s, 4 s … up to this
    fetch_batch: int = Field(100, ge=1, le=1000)  # mails per FETCH

    @model_validator(mode="after")
    def _folders(self) -> ImapMailboxConfig:
        if self.processed_folder and self.processed_folder == self.folder:
            raise ValueError("processed_folder must differ from folder (or be empty)")
        return self


class OutboundConfig(Section):
    host: str = ""  # empty: write mail to a maildir under data_dir instead of sending it
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "tls", "plain"] = "starttls"
    username: str = ""
    password: str = ""
    timeout_seconds: float = Field(30, gt=0)
    max_automatic_per_recipient_per_hour: int = Field(10, ge=0)
    dkim_selector: str = ""
    dkim_private_key: Path | None = None


class MailConfig(Section):
    support_addresses: tuple[str, ...] = ("support@localhost",)
    from_name: str = ""  # display name on our mail; empty: the desk's name
    secret: str = ""  # HMAC key for reply tokens; empty: generated once into data_dir
    max_attachment_bytes: int = Field(25 * 1024 * 1024, ge=0)
    new_tickets_per_sender: int = Field(5, ge=1)
    new_tickets_window_minutes: float = Field(10, gt=0)
    category_by_address: dict[str, str] = {}
    smtp_listener: SmtpListenerConfig = SmtpListenerConfig()
    imap: tuple[ImapMailboxConfig, ...] = ()
    outbound: OutboundConfig = OutboundConfig()

    @field_validator("support_addresses")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(a.strip().lower() for a in value)
        if not cleaned or any(a.count("@") != 1 or " " in a for a in cleaned):
            raise ValueError("a non-empty list of email addresses such as 'support@example.com'")
        return cleaned


class DiscordConfig(Section):
    token: str = ""  # empty: the bot does not start (everything else still runs)
    guild_id: int = 0
    forum_channel_id: int = 0
    alerts_channel_id: int = 0
    reports_channel_id: int = 0
    staff_role_ids: tuple[int, ...] = ()
    manager_role_ids: tuple[int, ...] = ()


class HttpConfig(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8787, ge=0, le=65535)


class Config(Section):
    desk: DeskConfig = DeskConfig()
    mail: MailConfig = MailConfig()
    discord: DiscordConfig = DiscordConfig()
    http: HttpConfig = HttpConfig()
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    source: Path | None = None  # the file this came from, if any

    @model_validator(mode="after")
    def _tls_pair(self) -> Config:
        listener = self.mail.smtp_listener
        if (listener.tls_certificate is None) != (listener.tls_key is None):
            raise ValueError("mail.smtp_listener: tls_certificate and tls_key go together")
        return self

    @property
    def database_url(self) -> str:
        return self.desk.database_url or f"sqlite+aiosqlite:///{self.desk.data_dir / 'desk.db'}"

    def core_settings(self) -> CoreSettings:
        return CoreSettings(
            ticket_prefix=self.desk.ticket_prefix, first_ticket_number=self.desk.first_ticket_number,
            categories=self.desk.categories, default_priority=self.desk.default_priority,
            reopen_closed_within=timedelta(days=self.desk.reopen_closed_within_days),
            status_after_reply=self.desk.status_after_reply,
        )


def find_config(explicit: str | None) -> Path | None:
    """--config, else $SUPPORTBOT_CONFIG, else ./supportbot.toml if present, else built-in defaults."""
    if explicit:
        return Path(explicit)
    if os.environ.get("SUPPORTBOT_CONFIG"):
        return Path(os.environ["SUPPORTBOT_CONFIG"])
    default = Path(DEFAULT_CONFIG_NAME)
    return default if default.exists() else None


def load_config(path: Path | None, environ: dict[str, str] | None = None) -> Config:
    environ = dict(os.environ if environ is None else environ)
    data: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist (create one with 'supportbot init {path}')")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {path} cannot be read: {e}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
        base = path.resolve().parent
    _apply_environment(data, environ)
    try:
        config = Config.model_validate({**data, "source": path})
    except ValidationError as e:
        raise ConfigError(_describe(e, path)) from None
    return _resolve_paths(config, base)


def _apply_environment(data: dict[str, Any], environ: dict[str, str]) -> None:
    for variable, (sections, key) in ENV_OVERRIDES.items():
        if environ.get(variable):
            node = data
            for name in sections:
                node = node.setdefault(name, {})
            node[key] = environ[variable]
    for mailbox in data.get("mail", {}).get("imap", []):
        if isinstance(mailbox, dict) and isinstance(mailbox.get("name"), str):
            secret = environ.get(f"SUPPORTBOT_IMAP_PASSWORD_{mailbox['name'].upper().replace('-', '_')}")
            if secret:
                mailbox["password"] = secret


def _resolve_paths(config: Config, base: Path) -> Config:
    """Relative paths in a config file are relative to that file's folder."""

    def absolute(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else base / p)

    listener = config.mail.smtp_listener.model_copy(update={
        "tls_certificate": absolute(config.mail.smtp_listener.tls_certificate),
        "tls_key": absolute(config.mail.smtp_listener.tls_key)})
    outbound = config.mail.outbound.model_copy(
        update={"dkim_private_key": absolute(config.mail.outbound.dkim_private_key)})
    imap = tuple(m.model_copy(update={"ca_file": absolute(m.ca_file)}) for m in config.mail.imap)
    mail = config.mail.model_copy(update={"smtp_listener": listener, "outbound": outbound, "imap": imap})
    desk = config.desk.model_copy(update={"data_dir": absolute(config.desk.data_dir)})
    return config.model_copy(update={"desk": desk, "mail": mail})


def _describe(error: ValidationError, path: Path | None) -> str:
    where = f"in {path}" if path else "in the built-in defaults/environment"
    lines = [f"invalid configuration {where}:"]
    for problem in error.errors():
        key = ".".join(str(p) for p in problem["loc"])
        if problem["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (misspelled? see config.example.toml)")
            continue
        value = problem.get("input")
        shown = "<secret>" if any(s in key for s in ("password", "token", "secret")) else repr(value)
        expected = problem["msg"].removeprefix("Value error, ").removeprefix("Input should be ")
        lines.append(f"  {key} = {shown}: expected {expected}")
    return "\n".join(lines)
