"""Configuration: one TOML file (plus SUPPORTBOT_* environment secrets) loaded once into frozen objects."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from core.attachment_policy import DEFAULT_DANGEROUS_EXTENSIONS, AttachmentPolicy
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


def check_timezone(value: str, *, empty_means: str | None) -> str:
    """An IANA zone name; empty is allowed only where it falls back to another key (`empty_means`)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if not value and empty_means:
        return value
    try:
        return ZoneInfo(value).key
    except (ZoneInfoNotFoundError, ValueError):
        fallback = f", or empty for {empty_means}" if empty_means else " or 'UTC'"
        raise ValueError(f"an IANA time zone name such as 'Europe/Paris'{fallback}") from None


# The engines the desk runs on (both async): SQLAlchemy driver name -> what it is for the message.
DATABASE_DRIVERS = {"sqlite+aiosqlite": "SQLite", "postgresql+asyncpg": "PostgreSQL"}
DATABASE_URL_EXPECTED = ("a database URL such as 'postgresql+asyncpg://user:password@host:5432/dbname' or "
                         "'sqlite+aiosqlite:////path/to/desk.db', or empty for SQLite in desk.data_dir")


def check_database_url(value: str) -> None:
    """A URL SQLAlchemy can parse, for one of DATABASE_DRIVERS; for SQLite, naming a file."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        raise ValueError(DATABASE_URL_EXPECTED) from None
    if url.drivername not in DATABASE_DRIVERS:
        backend = url.get_backend_name()
        known = [name for name in DATABASE_DRIVERS if name.partition("+")[0] == backend]
        hint = (f"; for {DATABASE_DRIVERS[known[0]]} write {known[0]}://…" if known
                else f"; '{url.drivername}' is not a database this desk runs on")
        raise ValueError(DATABASE_URL_EXPECTED + hint)
    if url.drivername.startswith("sqlite") and url.database in (None, "", ":memory:"):
        raise ValueError(DATABASE_URL_EXPECTED + "; this one names no file (an in-memory SQLite database "
                         "is not shared by the desk's connections)")


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

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        value = value.strip()
        if value:
            check_database_url(value)
        return value

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
        return check_timezone(value, empty_means=None)


class SmtpListenerConfig(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(2525, ge=0, le=65535)
    max_message_bytes: int = Field(35 * 1024 * 1024, ge=1024)
    protocol: Literal["smtp", "lmtp"] = "smtp"
    tls_certificate: Path | None = None
    tls_key: Path | None = None
    max_sessions: int = Field(100, ge=1)  # open sessions in all; beyond: 421 4.7.0 and closed
    max_sessions_per_client: int = Field(10, ge=1)  # per client address (IPv6: per /64)
    idle_timeout_seconds: float = Field(60, gt=0)  # for the next command (or more data during DATA); then 421
    max_commands_without_progress: int = Field(20, ge=1)  # NOOP, RSET … in a row without a stored mail
    max_line_bytes: int = Field(64 * 1024, ge=1000, le=16 * 1024 * 1024)  # longer: 500 5.5.2 after the data

    @field_validator("max_sessions_per_client")
    @classmethod
    def _per_client(cls, value: int, info: ValidationInfo) -> int:
        total = info.data.get("max_sessions")
        if total is not None and value > total:
            raise ValueError(f"at most max_sessions ({total})")
        return value


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
    ca_file: Path | None = None  # extra CA to trust for a relay with a private certificate
    max_automatic_per_recipient_per_hour: int = Field(10, ge=0)  # per mailbox: plus-tags and case folded
    max_automatic_per_hour: int = Field(100, ge=0)  # acknowledgements and reminders to anyone, in all
    acknowledgement_quotes_customer: bool = False  # repeat the customer's text in the acknowledgement
    retry_initial_seconds: float = Field(60, gt=0)
    retry_max_seconds: float = Field(3600, gt=0)
    give_up_after_hours: float = Field(72, gt=0)
    templates_dir: Path | None = None  # operator's templates (email/<name>.txt.j2 …) before ours
    dkim_selector: str = ""
    dkim_private_key: Path | None = None


class KeywordRuleConfig(Section):
    """[[mail.keyword_rules]]: words in a new ticket's subject or body set its category and/or priority."""

    words: tuple[str, ...] = Field(min_length=1)
    category: str = ""  # empty: leave the category alone
    priority: Priority | None = None

    @field_validator("words")
    @classmethod
    def _words(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(w.strip().lower() for w in value)
        if any(not w for w in cleaned):
            raise ValueError("a non-empty list of non-empty words")
        return cleaned


class AddressConfig(Section):
    """[mail.addresses."billing@example.com"]: how mail from that support address is signed."""

    name: str = ""  # display name on mail from this address; empty: mail.from_name (else desk.name)
    signature: str = ""  # plain text closing our mail from this address; empty: desk.name


class MailConfig(Section):
    support_addresses: tuple[str, ...] = ("support@localhost",)
    from_name: str = ""  # display name on our mail; empty: the desk's name
    secret: str = ""  # HMAC key for reply tokens; empty: generated once into data_dir
    max_attachment_bytes: int = Field(25 * 1024 * 1024, ge=0)
    new_tickets_per_sender: int = Field(5, ge=1)
    new_tickets_window_minutes: float = Field(10, gt=0)
    trusted_authserv_ids: tuple[str, ...] = ()  # whose Authentication-Results to believe (DMARC)
    max_cc_per_mail: int = Field(10, ge=0)  # other recipients of one mail who join its ticket
    max_participants_per_ticket: int = Field(25, ge=1)  # beyond: held, named to staff
    category_by_address: dict[str, str] = {}
    # Per support address (a key of mail.support_addresses): display name and signature of our mail.
    addresses: dict[str, AddressConfig] = {}
    keyword_rules: tuple[KeywordRuleConfig, ...] = ()
    processing_timeout_seconds: float = Field(30, gt=0)  # parse budget per mail; slower: quarantined
    inbound_poll_seconds: float = Field(5, gt=0)  # how often to look for mail stored by other processes
    # Attachments kept on the desk but never uploaded to Discord nor mailed on (core.attachment_policy).
    dangerous_extensions: tuple[str, ...] = DEFAULT_DANGEROUS_EXTENSIONS
    virus_scan_command: str = ""  # e.g. "clamdscan --no-summary --fdpass {path}"; empty: no scan
    virus_scan_timeout_seconds: float = Field(60, gt=0)
    smtp_listener: SmtpListenerConfig = SmtpListenerConfig()
    imap: tuple[ImapMailboxConfig, ...] = ()
    outbound: OutboundConfig = OutboundConfig()

    @field_validator("category_by_address")
    @classmethod
    def _category_addresses(cls, value: dict[str, str]) -> dict[str, str]:
        if any(a.count("@") != 1 for a in value):
            raise ValueError("a table of email address = category, e.g. { \"billing@example.com\" = \"billing\" }")
        return {a.strip().lower(): c.strip().lower() for a, c in value.items()}

    @field_validator("dangerous_extensions")
    @classmethod
    def _extensions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(e.strip().lower().lstrip(".") for e in value)
        if any(not e or not e.replace("_", "").replace("-", "").isalnum() for e in cleaned):
            raise ValueError("a list of file name extensions such as [\"exe\", \"js\"] (an empty list: none)")
        return cleaned

    @field_validator("virus_scan_command")
    @classmethod
    def _scan_command(cls, value: str) -> str:
        try:
            shlex.split(value)
        except ValueError:
            raise ValueError("a command line such as 'clamdscan --no-summary --fdpass {path}', or empty") from None
        return value.strip()

    @field_validator("support_addresses")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(a.strip().lower() for a in value)
        if not cleaned or any(a.count("@") != 1 or " " in a for a in cleaned):
            raise ValueError("a non-empty list of email addresses such as 'support@example.com'")
        return cleaned

    @field_validator("addresses")
    @classmethod
    def _identities(cls, value: dict[str, AddressConfig], info: ValidationInfo) -> dict[str, AddressConfig]:
        cleaned = {a.strip().lower(): identity for a, identity in value.items()}
        ours = info.data.get("support_addresses")
        unknown = [a for a in cleaned if ours is not None and a not in ours]
        if unknown:
            raise ValueError(f"a table per support address; mail.addresses.\"{unknown[0]}\" is not one of "
                             f"mail.support_addresses ({', '.join(ours or ())})")
        return cleaned


class DiscordConfig(Section):
    token: str = ""  # empty: the bot does not start (everything else still runs)
    guild_id: int = Field(0, ge=0)
    forum_channel_id: int = Field(0, ge=0)
    alerts_channel_id: int = Field(0, ge=0)  # 0: alerts only in the log
    reports_channel_id: int = Field(0, ge=0)
    staff_role_ids: tuple[int, ...] = ()
    manager_role_ids: tuple[int, ...] = ()
    auto_archive_minutes: Literal[60, 1440, 4320, 10080] = 10080
    projector_poll_seconds: float = Field(2.0, gt=0)  # how often to look for other processes' events
    page_size: int = Field(10, ge=1, le=25)  # tickets per page in /list and /search


class ReportsConfig(Section):
    """[reports]: the daily summary mailed to managers."""

    enabled: bool = True  # sends only when managers is non-empty too
    managers: tuple[str, ...] = ()
    send_at: str = "08:00"  # local wall time HH:MM, in `timezone`
    timezone: str = ""  # empty: desk.timezone
    catch_up_days: int = Field(7, ge=1, le=60)  # missed days sent after an outage, at most
    trend_days: int = Field(14, ge=8, le=60)  # days in the chart
    oldest_tickets: int = Field(5, ge=0, le=50)  # oldest open tickets listed

    @field_validator("managers")
    @classmethod
    def _managers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(a.strip().lower() for a in value)
        if any(a.count("@") != 1 or " " in a or len(a) > 320 for a in cleaned):
            raise ValueError("a list of email addresses such as 'boss@example.com'")
        return cleaned

    @field_validator("send_at")
    @classmethod
    def _send_at(cls, value: str) -> str:
        hours, _, minutes = value.strip().partition(":")
        if not (hours.isdigit() and minutes.isdigit() and len(minutes) == 2
                and int(hours) < 24 and int(minutes) < 60):
            raise ValueError("a local time as HH:MM, e.g. '08:00'")
        return f"{int(hours):02d}:{minutes}"

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return check_timezone(value, empty_means="desk.timezone")


class SlaPolicyConfig(Section):
    """[sla.policies.<priority>]: targets as durations ("4h", "1d 2h", "30m"); empty: not measured."""

    first_response: str = ""
    next_response: str = ""  # after each customer mail that follows a staff reply
    resolution: str = ""
    business_hours: bool = True  # false: calendar time, every hour counts

    @field_validator("first_response", "next_response", "resolution")
    @classmethod
    def _duration(cls, value: str) -> str:
        from core.errors import UserError
        from core.sla.policy import parse_duration

        try:
            parse_duration(value)
        except UserError as e:
            raise ValueError(str(e)) from None
        return value.strip()


class BusinessHoursConfig(Section):
    """[sla.business_hours]: local opening hours per weekday ("09:00-17:00", "09:00-12:00, 13:00-17:00", "")."""

    mon: str = "09:00-17:00"
    tue: str = "09:00-17:00"
    wed: str = "09:00-17:00"
    thu: str = "09:00-17:00"
    fri: str = "09:00-17:00"
    sat: str = ""
    sun: str = ""

    @field_validator("*")
    @classmethod
    def _openings(cls, value: str) -> str:
        from core.errors import UserError
        from core.sla.business_time import parse_openings

        try:
            parse_openings(value)
        except UserError as e:
            raise ValueError(str(e)) from None
        return value


class SlaConfig(Section):
    """[sla]: response-time promises per priority, alerts, and auto-close of quiet tickets."""

    timezone: str = ""  # empty: desk.timezone
    business_hours: BusinessHoursConfig = BusinessHoursConfig()
    holidays: tuple[str, ...] = ()  # ISO dates, e.g. ["2026-12-25"]
    at_risk_share: float = Field(0.8, gt=0, lt=1)
    raise_priority_on_breach: bool = False
    on_call_role_id: int = Field(0, ge=0)  # Discord role mentioned when the ticket is unassigned; 0: none
    pending_reminder_after: str = ""  # empty: off
    pending_resolve_after: str = ""
    resolved_close_after: str = ""
    poll_seconds: float = Field(5.0, gt=0)  # how often to look for other processes' events and timers
    policies: dict[Priority, SlaPolicyConfig] = {}

    @field_validator("holidays", mode="before")
    @classmethod
    def _holidays(cls, value: Any) -> Any:
        from datetime import date

        if not isinstance(value, list | tuple):
            return value
        try:  # TOML dates (2026-12-25) arrive as date objects, quoted ones as text
            return tuple(d.isoformat() if isinstance(d, date) else date.fromisoformat(str(d)).isoformat()
                         for d in value)
        except ValueError:
            raise ValueError("a list of dates such as [\"2026-12-25\"]") from None

    @field_validator("pending_reminder_after", "pending_resolve_after", "resolved_close_after")
    @classmethod
    def _duration(cls, value: str) -> str:
        return SlaPolicyConfig._duration(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return check_timezone(value, empty_means="desk.timezone")

    @model_validator(mode="after")
    def _usable(self) -> SlaConfig:
        from core.errors import UserError

        try:
            self.settings("UTC")  # e.g. a calendar closed every day fails here, at start
        except UserError as e:
            raise ValueError(str(e)) from None
        return self

    def settings(self, desk_timezone: str) -> Any:
        """The core's SlaSettings (typed Any here so loading a config does not import core.sla)."""
        from datetime import date

        from core.sla.business_time import business_calendar
        from core.sla.policy import AutoClose, SlaPolicy, SlaSettings, parse_duration

        policies = {
            priority: SlaPolicy(parse_duration(p.first_response), parse_duration(p.next_response),
                                parse_duration(p.resolution), p.business_hours)
            for priority, p in self.policies.items()
            if p.first_response or p.next_response or p.resolution}
        calendar = None
        if any(p.business_hours for p in policies.values()):
            calendar = business_calendar(self.timezone or desk_timezone, self.business_hours.model_dump(),
                                         [date.fromisoformat(d) for d in self.holidays])
        auto_close = AutoClose(parse_duration(self.pending_reminder_after),
                               parse_duration(self.pending_resolve_after),
                               parse_duration(self.resolved_close_after))
        return SlaSettings(policies=policies, calendar=calendar, at_risk_share=self.at_risk_share,
                           raise_priority_on_breach=self.raise_priority_on_breach,
                           on_call_role_id=self.on_call_role_id or None, auto_close=auto_close)


class HttpConfig(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8787, ge=0, le=65535)


class Config(Section):
    desk: DeskConfig = DeskConfig()
    mail: MailConfig = MailConfig()
    discord: DiscordConfig = DiscordConfig()
    http: HttpConfig = HttpConfig()
    reports: ReportsConfig = ReportsConfig()
    sla: SlaConfig = SlaConfig()
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    source: Path | None = None  # the file this came from, if any

    @model_validator(mode="after")
    def _tls_pair(self) -> Config:
        listener = self.mail.smtp_listener
        if (listener.tls_certificate is None) != (listener.tls_key is None):
            raise ValueError("mail.smtp_listener: tls_certificate and tls_key go together")
        routed = [*self.mail.category_by_address.values(), *(r.category for r in self.mail.keyword_rules)]
        unknown = sorted({c.lower() for c in routed if c and c.lower() not in self.desk.categories})
        if unknown:
            raise ValueError(f"mail routing names categories that desk.categories lacks: {', '.join(unknown)}")
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
            attachments=AttachmentPolicy(dangerous_extensions=self.mail.dangerous_extensions,
                                         virus_scan_command=self.mail.virus_scan_command,
                                         virus_scan_timeout_seconds=self.mail.virus_scan_timeout_seconds),
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
            raise ConfigError(f"config file {path} does not exist (create one with 'supportbot init {path}')") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {path} cannot be read: {e}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
        base = path.resolve().parent
    from_environment = _apply_environment(data, environ)
    try:
        config = Config.model_validate({**data, "source": path})
    except ValidationError as e:
        raise ConfigError(_describe(e, path, from_environment)) from None
    config = _resolve_paths(config, base)
    _check_extras(config, environ)
    return config


# Optional dependencies (pyproject.toml's extras): what a setting needs -> (module, extra).
POSTGRES_DRIVER = ("asyncpg", "postgres")
DKIM_SIGNER = ("dkim", "dkim")


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _check_extras(config: Config, environ: dict[str, str]) -> None:
    """A setting whose optional dependency is missing stops at start with the extra to install."""
    if config.desk.database_url.startswith("postgresql") and not installed(POSTGRES_DRIVER[0]):
        key = "desk.database_url"
        if environ.get("SUPPORTBOT_DATABASE_URL"):
            key += " (from SUPPORTBOT_DATABASE_URL)"
        raise ConfigError(f"{key} needs the PostgreSQL driver: pip install 'supportbot[{POSTGRES_DRIVER[1]}]'")
    outbound = config.mail.outbound
    if (outbound.dkim_selector or outbound.dkim_private_key) and not installed(DKIM_SIGNER[0]):
        key = "mail.outbound.dkim_private_key" if outbound.dkim_private_key else "mail.outbound.dkim_selector"
        raise ConfigError(f"{key} is set, and DKIM signing needs dkimpy: pip install 'supportbot[{DKIM_SIGNER[1]}]' "
                          "(or remove dkim_selector and dkim_private_key to send unsigned mail)")


def _apply_environment(data: dict[str, Any], environ: dict[str, str]) -> dict[str, str]:
    """Puts SUPPORTBOT_* values into `data`; returns dotted key -> the variable that set it."""
    applied: dict[str, str] = {}
    for variable, (sections, key) in ENV_OVERRIDES.items():
        if environ.get(variable):
            node = data
            for name in sections:
                node = node.setdefault(name, {})
            node[key] = environ[variable]
            applied[".".join((*sections, key))] = variable
    for index, mailbox in enumerate(data.get("mail", {}).get("imap", [])):
        if isinstance(mailbox, dict) and isinstance(mailbox.get("name"), str):
            variable = f"SUPPORTBOT_IMAP_PASSWORD_{mailbox['name'].upper().replace('-', '_')}"
            if environ.get(variable):
                mailbox["password"] = environ[variable]
                applied[f"mail.imap.{index}.password"] = variable
    return applied


def _resolve_paths(config: Config, base: Path) -> Config:
    """Relative paths in a config file are relative to that file's folder."""

    def absolute(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else base / p)

    listener = config.mail.smtp_listener.model_copy(update={
        "tls_certificate": absolute(config.mail.smtp_listener.tls_certificate),
        "tls_key": absolute(config.mail.smtp_listener.tls_key)})
    outbound = config.mail.outbound.model_copy(
        update={"dkim_private_key": absolute(config.mail.outbound.dkim_private_key),
                "ca_file": absolute(config.mail.outbound.ca_file),
                "templates_dir": absolute(config.mail.outbound.templates_dir)})
    imap = tuple(m.model_copy(update={"ca_file": absolute(m.ca_file)}) for m in config.mail.imap)
    mail = config.mail.model_copy(update={"smtp_listener": listener, "outbound": outbound, "imap": imap})
    desk = config.desk.model_copy(update={"data_dir": absolute(config.desk.data_dir)})
    return config.model_copy(update={"desk": desk, "mail": mail})


def _describe(error: ValidationError, path: Path | None, from_environment: dict[str, str] | None = None) -> str:
    where = f"in {path}" if path else "in the built-in defaults/environment"
    lines = [f"invalid configuration {where}:"]
    for problem in error.errors():
        key = ".".join(str(p) for p in problem["loc"])
        if problem["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (misspelled? see config.example.toml)")
            continue
        value = problem.get("input")
        shown = "<secret>" if any(s in key for s in ("password", "token", "secret")) else repr(value)
        if key == "desk.database_url" and isinstance(value, str):
            shown = repr(_without_password(value))
        source = f" (from {from_environment[key]})" if from_environment and key in from_environment else ""
        expected = problem["msg"].removeprefix("Value error, ").removeprefix("Input should be ")
        lines.append(f"  {key} = {shown}{source}: expected {expected}")
    return "\n".join(lines)


def _without_password(url: str) -> str:
    """A database URL as it may be shown: the password, if any, replaced by ***."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
        return url if parsed.password is None else parsed.render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # not a URL: hide whatever stands between ':' and '@'
        return re.sub(r"(//[^/:@]*:)[^@]*@", r"\1***@", url)
