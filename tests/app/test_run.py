"""`supportbot run`: starts its parts, serves /healthz and /metrics, and stops cleanly on a signal."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.kit import wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=1) as response:
        return response.read()


def test_run_serves_health_and_metrics_and_stops_cleanly_on_sigterm(tmp_path: Path):
    port = free_port()
    config = tmp_path / "supportbot.toml"
    config.write_text(f"[http]\nport = {port}\n[mail.smtp_listener]\nport = {free_port()}\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "supportbot", "--config", str(config), "run"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "SUPPORTBOT_DISCORD_TOKEN": ""})
    try:
        # Until the endpoint listens, connecting is refused (an OSError): wait through those.
        health = wait_until(lambda: get(f"http://127.0.0.1:{port}/healthz"), ignoring=(OSError,),
                            timeout=30, interval=0.1, what="GET /healthz")
        assert b'"status": "ok"' in health
        metrics = wait_until(lambda: get(f"http://127.0.0.1:{port}/metrics"), ignoring=(OSError,),
                             timeout=10, interval=0.1, what="GET /metrics").decode()
        assert "supportbot_database_up 1.0" in metrics
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output
    assert "started health and metrics endpoint" in output
    assert "Discord" in output or "discord" in output  # says what it skipped, and why
    assert "stopped cleanly" in output
    assert "Traceback" not in output
    assert (tmp_path / "supportbot-data" / "desk.db").exists()


def test_a_port_in_use_is_one_clear_line_and_nothing_keeps_running(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "supportbot.toml"
        config.write_text(f"[http]\nport = {port}\n[mail.smtp_listener]\nport = {free_port()}\n")
        result = subprocess.run([sys.executable, "-m", "supportbot", "--config", str(config), "run"],
                                capture_output=True, text=True, timeout=60,
                                env={**os.environ, "SUPPORTBOT_DISCORD_TOKEN": ""})
    assert result.returncode == 1
    assert "health and metrics endpoint could not start: " in result.stderr
    assert "check its host and port in the config" in result.stderr
    assert "stopped cleanly" in result.stderr
    assert "Traceback" not in result.stderr
