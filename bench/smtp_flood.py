"""Benchmark: 1,100 idle SMTP connections against `supportbot run`'s wiring at a 1,024-descriptor limit (issue 14).

    python -m bench.smtp_flood                      # before (limits off), one flooding address, 110 addresses
    python -m bench.smtp_flood --connections 2000 --scenarios one-client many-clients

The desk runs in a process of its own, built as `supportbot run` builds it (supportbot.app.build_app:
health and metrics, the SMTP listener, the inbound worker, the outbox …) on its own loop (uvloop where
installed), with its descriptor limit lowered to 1,024 (resource.setrlimit) and the shipped defaults
of mail.smtp_listener (100 sessions, 10 per client, 60 s idle timeout). This process, with a higher
limit, opens the connections (in waves of 100, the listen backlog) and holds them without sending
a byte, then, with all of them still open: another client sends a mail (does it get its 250?),
/healthz is asked (does it answer?), and the desk's open descriptors are counted.

Scenarios: "before" is the same wiring with the limits switched off (no session cap, 300 s idle
timeout: the listener as it was) and the flood from one address; "one-client" floods from one
address (127.0.0.2); "many-clients" from 110 addresses (127.0.1.1-110, 10 connections each), so
the total cap, not the per-client one, is what holds: the other client then retries every 5 s, as
an MTA would, and the time to its 250 is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import smtplib
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

DESK_DESCRIPTORS = 1024
SCENARIOS = ("before", "one-client", "many-clients")
CLIENT = "127.0.0.200"
WAVE = 100  # connections opened at once: asyncio's listen backlog  # the ordinary sender that wants its 250


def _serve(data_dir: str, limits: dict[str, Any], limits_off: bool, log_file: str, ports: Any, stop: Any) -> None:
    """The desk process: `supportbot run`'s parts, at a 1,024-descriptor limit."""
    import logging

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (DESK_DESCRIPTORS, hard))
    logging.basicConfig(filename=log_file, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from mail_gateway import smtp_listener
    from supportbot import runloop
    from supportbot.app import build_app
    from supportbot.config import Config
    from supportbot.health import HealthServer

    if limits_off:  # as before issue 14: nothing fitted to the descriptor limit
        smtp_listener.fit_to_descriptors = lambda fitted: fitted

    async def main() -> None:
        defaults = Config()
        config = defaults.model_copy(update={
            "desk": defaults.desk.model_copy(update={"data_dir": Path(data_dir)}),
            "http": defaults.http.model_copy(update={"port": 0}),
            "mail": defaults.mail.model_copy(update={"smtp_listener": defaults.mail.smtp_listener.model_copy(
                update={"port": 0, **limits})})})
        app = await build_app(config)
        await app.start()
        listener = next(p for p in app.started if isinstance(p, smtp_listener.SmtpListener))
        health = next(p for p in app.started if isinstance(p, HealthServer))
        ports.put((os.getpid(), listener.port, health.port))
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await app.stop()

    runloop.run(main())


async def _idle_connection(port: int, source: str) -> tuple[str, asyncio.StreamWriter | None]:
    """Connect and wait for the greeting; keep the connection open and send nothing."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), 15)
    except (TimeoutError, OSError) as e:
        return f"connect failed ({type(e).__name__})", None
    try:
        line = await asyncio.wait_for(reader.readline(), 10)
    except TimeoutError:
        return "no answer in 10 s", writer
    except OSError:
        return "reset", writer
    if not line:
        return "closed without a word", writer
    return line[:3].decode(errors="replace"), writer


def _send_mail(port: int) -> tuple[str, float]:
    started = time.perf_counter()
    raw = b"From: bob@customer.test\r\nTo: support@localhost\r\nSubject: Still there?\r\n\r\nHello\r\n"
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10, source_address=(CLIENT, 0)) as client:
            refused = client.sendmail("bob@customer.test", ["support@localhost"], raw)
        outcome = "250" if not refused else f"refused {refused}"
    except smtplib.SMTPResponseException as e:
        outcome = f"{e.smtp_code} {e.smtp_error.decode(errors='replace')[:60]}"
    except (OSError, smtplib.SMTPException) as e:
        outcome = f"failed: {type(e).__name__}"
    return outcome, time.perf_counter() - started


async def _healthz(port: int) -> tuple[str, float]:
    started = time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        writer.write(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        response = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        status = response.split(b"\r\n", 1)[0].decode(errors="replace") if response else "closed without a word"
        body = response.partition(b"\r\n\r\n")[2]
        if body.startswith(b"{"):
            status += " " + str(json.loads(body).get("status"))
    except (TimeoutError, OSError) as e:
        status = f"failed: {type(e).__name__}"
    return status, time.perf_counter() - started


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _sources(scenario: str, connections: int) -> list[str]:
    if scenario == "many-clients":
        return [f"127.0.1.{1 + i // 10}" for i in range(connections)]
    return ["127.0.0.2"] * connections


async def run_scenario(scenario: str, connections: int, base: Path) -> dict[str, Any]:
    limits_off = scenario == "before"
    limits = ({"max_sessions": 1_000_000, "max_sessions_per_client": 1_000_000, "idle_timeout_seconds": 300,
               "max_commands_without_progress": 1_000_000} if limits_off else {})
    log_file = base / f"{scenario}.log"
    context = multiprocessing.get_context("spawn")
    ports, stop = context.Queue(), context.Event()
    desk = context.Process(target=_serve, args=(str(base / scenario), limits, limits_off, str(log_file), ports, stop))
    desk.start()
    pid, smtp_port, health_port = await asyncio.to_thread(ports.get, True, 120)
    before_flood = _descriptors(pid)
    result: dict[str, Any] = {"scenario": scenario, "descriptors_idle": before_flood}
    warnings_before = log_file.read_text().count(" WARNING ")
    started = time.perf_counter()
    sources = _sources(scenario, connections)
    outcomes: list[tuple[str, asyncio.StreamWriter | None]] = []
    for wave in range(0, connections, WAVE):  # no more at once than the listen backlog holds
        outcomes += await asyncio.gather(*(_idle_connection(smtp_port, s) for s in sources[wave:wave + WAVE]))
    result["flood_seconds"] = time.perf_counter() - started
    result["answers"] = dict(Counter(what for what, _ in outcomes).most_common())
    result["descriptors_flooded"] = _descriptors(pid)
    result["mail"] = await asyncio.to_thread(_send_mail, smtp_port)
    result["healthz"] = await _healthz(health_port)
    if scenario == "many-clients" and result["mail"][0] != "250":  # an MTA tries again later
        waited = time.perf_counter()
        while time.perf_counter() - waited < 120:
            await asyncio.sleep(5)
            outcome, _ = await asyncio.to_thread(_send_mail, smtp_port)
            if outcome == "250":
                result["retried_to_250_seconds"] = time.perf_counter() - waited
                break
    result["descriptors_end"] = _descriptors(pid)
    for _, writer in outcomes:
        if writer is not None:
            writer.close()
    stop.set()
    await asyncio.to_thread(desk.join, 60)
    log = log_file.read_text()
    result["warnings_logged"] = log.count(" WARNING ") - warnings_before
    result["first_warning"] = next((line.split(" WARNING ", 1)[1] for line in log.splitlines()
                                    if " WARNING " in line and "mail_gateway.smtp" in line), "")
    result["log_errors"] = log.count(" ERROR ")
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1100)
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the flooding side needs its descriptors
    print(f"{args.connections} idle connections; the desk at {DESK_DESCRIPTORS} descriptors; "
          f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as base:
        for scenario in args.scenarios:
            r = await run_scenario(scenario, args.connections, Path(base))
            print(f"\n== {scenario}")
            print(f"  flood answers: {r['answers']}  ({r['flood_seconds']:.1f} s to open them all)")
            print(f"  desk descriptors: {r['descriptors_idle']} idle, {r['descriptors_flooded']} flooded, "
                  f"{r['descriptors_end']} after the probes")
            print(f"  another client's mail: {r['mail'][0]} in {r['mail'][1] * 1000:.0f} ms"
                  + (f"; retrying every 5 s: 250 after {r['retried_to_250_seconds']:.0f} s"
                     if "retried_to_250_seconds" in r else ""))
            print(f"  /healthz: {r['healthz'][0]} in {r['healthz'][1] * 1000:.0f} ms")
            print(f"  warnings logged: {r['warnings_logged']}; errors logged: {r['log_errors']}")
            if r["first_warning"]:
                print(f"  first warning: {r['first_warning']}")


if __name__ == "__main__":
    asyncio.run(main())
