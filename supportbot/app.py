"""`supportbot run`: start every configured part on one asyncio loop and stop them cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from core.desk import Desk
from core.errors import UserError
from core.intake import Intake
from core.migrate import upgrade
from mail_gateway.worker import InboundWorker
from supportbot.config import Config
from supportbot.discord_wiring import discord_part
from supportbot.health import health_part
from supportbot.imap_wiring import imap_part
from supportbot.mail_wiring import intake_settings, smtp_listener_part
from supportbot.outbound import notifier_part, sender_part
from supportbot.reporting import report_part, report_with_chart
from supportbot.sla_wiring import sla_part

log = logging.getLogger("supportbot.app")


class Part(Protocol):
    """Something `run` starts and stops: the SMTP listener, an IMAP reader, the bot, a worker."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class App:
    """The parts `run` started, in order, and the desk they share."""

    desk: Desk
    parts: list[Part] = field(default_factory=list)
    started: list[Part] = field(default_factory=list)

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
    """The HMAC key for reply tokens: from config/env, else generated once and kept in data_dir.

    Made so that processes starting together on a fresh data directory agree on one key and none
    ever reads a partial one: the key is written to a temporary file (0600) in the same folder,
    flushed to disk, then linked into place with os.link, which fails when the name exists. The
    loser of that race reads the winner's complete file. A key file that is empty or too short
    (cut short by a crash of an older version) stops the start, naming the file."""
    if config.mail.secret:
        return config.mail.secret.encode()
    path = config.desk.data_dir / "secret.key"
    min_length = 32  # characters; a generated key has 64 (32 random bytes in hex)

    def existing() -> bytes | None:
        try:
            key = path.read_bytes().strip()
        except FileNotFoundError:
            return None
        if len(key) < min_length:
            raise UserError(
                f"the signing key file {path} is {'empty' if not key else f'too short ({len(key)} characters)'}; "
                f"a key has at least {min_length} characters. Restore it from a backup, or delete it to "
                "generate a new one (links in mail already sent, signed with the old key, stop working); "
                "or set mail.secret / SUPPORTBOT_SECRET")
        return key

    key = existing()
    if key is not None:
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = secrets.token_hex(32).encode()
    fd, temporary = tempfile.mkstemp(prefix=".secret.key.", suffix=".tmp", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(fresh)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temporary, path)  # atomic, and never replaces a key another process put there
        except FileExistsError:
            key = existing()  # the other starter's: complete, since it was linked only after its fsync
            if key is None:
                raise UserError(f"the signing key file {path} appeared and vanished while starting; "
                                "start again") from None
            return key
        except OSError as e:
            raise UserError(f"could not create the signing key file {path}: {e.strerror or e} (the folder's "
                            "file system must support hard links); or set mail.secret / SUPPORTBOT_SECRET") from e
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
    with contextlib.suppress(OSError):  # make the new name itself durable
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    log.info("generated a new signing key in %s (keep it: replies to old mail depend on it)", path)
    return fresh


async def build_app(config: Config, *, migrate: bool = True) -> App:
    desk = open_desk(config)
    if migrate:
        change = await upgrade(desk.db)
        log.info("%s; %s", change, _describe_db(config))
    app = App(desk)
    app.parts = build_parts(config, desk, secret=desk_secret(config), running=lambda: [p.name for p in app.started])
    return app


def build_parts(config: Config, desk: Desk, *, secret: bytes, running: Callable[[], list[str]]) -> list[Part]:
    """Every part `run` starts, in start order, each built with exactly what it needs; a part that is
    not configured is left out (its factory logs why)."""
    worker = InboundWorker(Intake(desk, intake_settings(config, secret)), poll_seconds=config.mail.inbound_poll_seconds)

    async def reports(day: date | None = None) -> tuple[Any, bytes]:  # the bot shows reports it cannot build
        return await report_with_chart(desk, config, day)

    parts = [
        health_part(config, desk, CollectorRegistry(), running),  # a registry per app: tests run several
        sender_part(config, desk),
        notifier_part(config, desk, secret),
        worker,  # before the mail inputs: parts stop in reverse, so inputs stop taking mail first
        smtp_listener_part(config, desk, on_stored=worker.wake),
        imap_part(config, desk, on_stored=worker.wake),
        discord_part(config, desk, reports=reports),
        sla_part(config, desk),
        report_part(config, desk),
    ]
    return [part for part in parts if part is not None]


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
