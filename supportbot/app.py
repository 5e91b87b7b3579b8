"""`supportbot run`: start every configured part on one asyncio loop and stop them cleanly."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from core.desk import Desk
from core.errors import UserError
from core.migrate import upgrade
from supportbot.config import Config

log = logging.getLogger("supportbot.app")


class Part(Protocol):
    """Something `run` starts and stops: the SMTP listener, an IMAP reader, the bot, a worker."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class App:
    config: Config
    desk: Desk
    parts: list[Part] = field(default_factory=list)
    started: list[Part] = field(default_factory=list)
    # Per app, not prometheus_client's global registry: tests run several apps in one process.
    metrics: CollectorRegistry = field(default_factory=CollectorRegistry)
    # day (None: the last full day) -> (core.reports.DailyReport, chart PNG bytes)
    report_source: Callable[..., Awaitable[tuple[Any, bytes]]] | None = None

    async def start(self) -> None:
        for part in self.parts:
            try:
                await part.start()
            except OSError as e:  # typically a port in use: the operator's to fix, not a bug
                raise UserError(f"{part.name} could not start: {e.strerror or e} "
                                "(check its host and port in the config)") from None
            self.started.append(part)

    async def stop(self) -> None:
        """Stop in reverse order: inputs first, so work in flight drains into the database."""
        while self.started:
            part = self.started.pop()
            try:
                await part.stop()
                log.info("stopped %s", part.name)
            except Exception:
                log.exception("stopping %s failed", part.name)
        await self.desk.close()


def open_desk(config: Config) -> Desk:
    config.desk.data_dir.mkdir(parents=True, exist_ok=True)
    return Desk.open(config.database_url, config.desk.data_dir, config.core_settings())


def desk_secret(config: Config) -> bytes:
    """The HMAC key for reply tokens: from config/env, else generated once and kept in data_dir."""
    if config.mail.secret:
        return config.mail.secret.encode()
    path = config.desk.data_dir / "secret.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        log.info("generated a new signing key in %s (keep it: replies to old mail depend on it)", path)
    return path.read_text().strip().encode()


PartFactory = Callable[[App], Awaitable[Part | None]]


async def build_app(config: Config, *, migrate: bool = True) -> App:
    desk = open_desk(config)
    if migrate:
        change = await upgrade(desk.db)
        log.info("%s; %s", change, _describe_db(config))
    app = App(config, desk)
    from supportbot.reporting import report_with_chart

    # The bot shows reports but may not import supportbot: it gets this function instead.
    app.report_source = lambda day=None: report_with_chart(desk, config, day)
    for factory in part_factories():
        part = await factory(app)
        if part is not None:
            app.parts.append(part)
    return app


def part_factories() -> list[PartFactory]:
    """The parts `run` knows, in start order; each factory returns None (and logs why) to skip."""
    from bot.part import discord_part
    from supportbot.health import health_part
    from supportbot.imap_wiring import imap_part
    from supportbot.mail_wiring import inbound_worker_part, smtp_listener_part
    from supportbot.outbound import notifier_part, sender_part
    from supportbot.reporting import report_part
    from supportbot.sla_wiring import sla_part

    # The worker before the listener: parts stop in reverse, so the listener stops taking mail first.
    return [health_part, sender_part, notifier_part, inbound_worker_part, smtp_listener_part, imap_part,
            discord_part, sla_part, report_part]


async def run(config: Config, *, migrate: bool = True, ready: asyncio.Event | None = None,
              stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests)
            pass
    if config.source is None:
        log.info("no config file: running on built-in defaults (write one with 'supportbot init')")
    app = await build_app(config, migrate=migrate)
    try:
        await app.start()
        log.info("supportbot is running; %d part(s) started; Ctrl-C or SIGTERM stops it", len(app.started))
        if ready is not None:
            ready.set()
        await stop.wait()
        log.info("shutting down")
    finally:
        await app.stop()
        log.info("stopped cleanly")


def _describe_db(config: Config) -> str:
    url = config.database_url
    if url.startswith("sqlite"):
        return f"SQLite at {Path(url.split(':///', 1)[1])}"
    from sqlalchemy.engine import make_url

    return f"PostgreSQL at {make_url(url).render_as_string(hide_password=True)}"
