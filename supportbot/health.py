"""/healthz and Prometheus /metrics on a local HTTP port, with figures read from the database."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from sqlalchemy import func, select

from core.desk import Desk
from core.models import ConsumerCursor, Event, InboundMail, OutboxMail, Ticket
from supportbot.config import Config, HttpConfig

log = logging.getLogger("supportbot.health")


class HealthServer:
    name = "health and metrics endpoint"

    def __init__(self, desk: Desk, http: HttpConfig, metrics: CollectorRegistry,
                 running: Callable[[], list[str]]) -> None:
        self.desk, self.http, self.registry, self.running = desk, http, metrics, running
        self.started_at = time.monotonic()
        self._runner: web.AppRunner | None = None
        registry = metrics
        self.tickets = Gauge("supportbot_tickets", "Tickets by status", ["status"], registry=registry)
        self.outbox = Gauge("supportbot_outbox_mail", "Outbound mail by status", ["status"], registry=registry)
        self.inbound = Gauge("supportbot_inbound_mail", "Received mail by status", ["status"], registry=registry)
        self.lag = Gauge("supportbot_consumer_lag_events", "Events a consumer has not handled yet",
                         ["consumer"], registry=registry)
        self.up = Gauge("supportbot_database_up", "1 when the database answered the last scrape",
                        registry=registry)
        self.port: int | None = None

    async def start(self) -> None:
        web_app = web.Application()
        web_app.add_routes([web.get("/healthz", self.healthz), web.get("/metrics", self.metrics)])
        self._runner = web.AppRunner(web_app, access_log=None)
        await self._runner.setup()
        http = self.http
        site = web.TCPSite(self._runner, http.host, http.port)
        await site.start()
        bound = self._runner.addresses  # (host, port, …) per socket: the real port when http.port is 0
        self.port = int(bound[0][1]) if bound else http.port
        log.info("started %s on http://%s:%s (/healthz, /metrics)", self.name, http.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def healthz(self, request: web.Request) -> web.Response:
        parts = self.running()
        try:
            await self.desk.db.ping()
        except Exception as e:
            log.warning("health check: database unreachable: %s", type(e).__name__)
            return web.json_response({"status": "error", "database": "unreachable", "parts": parts},
                                     status=503)
        return web.json_response({"status": "ok", "database": "ok", "parts": parts,
                                  "uptime_seconds": round(time.monotonic() - self.started_at, 1)})

    async def metrics(self, request: web.Request) -> web.Response:
        try:
            await self._refresh()
            self.up.set(1)
        except Exception as e:
            log.warning("metrics: database query failed: %s", type(e).__name__)
            self.up.set(0)
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _refresh(self) -> None:
        async with self.desk.db.read() as session:
            for gauge, column in ((self.tickets, Ticket.status), (self.outbox, OutboxMail.status),
                                  (self.inbound, InboundMail.status)):
                gauge.clear()
                rows = await session.execute(select(column, func.count()).group_by(column))
                for status, count in rows:
                    gauge.labels(str(status)).set(count)
            last_event = await session.scalar(select(func.max(Event.id))) or 0
            self.lag.clear()
            for name, position in await session.execute(select(ConsumerCursor.name, ConsumerCursor.position)):
                self.lag.labels(name).set(last_event - position)


def health_part(config: Config, desk: Desk, metrics: CollectorRegistry,
                running: Callable[[], list[str]]) -> HealthServer | None:
    if not config.http.enabled:
        log.info("skipping health and metrics endpoint: http.enabled is false")
        return None
    return HealthServer(desk, config.http, metrics, running)
