"""Real mail servers on loopback for tests and benchmarks: Dovecot (IMAP/LMTP) and Postfix (SMTP).

Plain functions (`start_dovecot`, `start_postfix`) work anywhere, e.g. in bench/; the pytest
fixtures `dovecot` and `postfix`, and `dovecot_and_postfix` for a test's own fixture, wrap them
and skip (fail in CI) when a server is missing. Both run the project's own scripts in
scripts/servers/, which bind 127.0.0.1 only, and stop their server by its PID.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from tests.conftest import SERVERS, need_server, not_installed

HOST = "127.0.0.1"
T = TypeVar("T")
DEFAULT_USERS = {"support@example.test": "secret", "other@example.test": "secret"}
POSTFIX_NEEDS_ROOT = ("Postfix's master must run as root: run the tests as root "
                      "(scripts/test as root also installs the servers)")


class ServerUnavailable(RuntimeError):
    """The server is not installed or did not start; the message says why."""


def free_ports(count: int) -> list[int]:
    """Ports the kernel handed out just now (all held at once, so they are distinct)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]


@dataclass
class Dovecot:
    """A running private Dovecot: IMAP (plain/STARTTLS), IMAPS and LMTP on loopback."""

    state_dir: Path
    imap_port: int
    imaps_port: int
    lmtp_port: int
    users: dict[str, str]
    pid: int = 0
    host: str = HOST
    _env: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def ca_file(self) -> Path:
        """The self-signed certificate, to trust for STARTTLS / IMAPS."""
        return self.state_dir / "cert.pem"

    @property
    def conf(self) -> Path:
        return self.state_dir / "dovecot.conf"

    def maildir(self, user: str = "support@example.test") -> Path:
        return self.state_dir / "mail" / user

    def deliver(self, raw: bytes, to: str | Sequence[str] = "support@example.test",
                mail_from: str = "customer@example.org") -> None:
        """Put one mail into mailboxes over LMTP, as an MTA's final hop would."""
        self.deliver_many([raw], to=to, mail_from=mail_from)

    def deliver_many(self, raws: Sequence[bytes], to: str | Sequence[str] = "support@example.test",
                     mail_from: str = "customer@example.org") -> None:
        """Several mails over one LMTP connection (much faster than one connection each)."""
        rcpts = [to] if isinstance(to, str) else list(to)
        with smtplib.LMTP(self.host, self.lmtp_port, timeout=30) as lmtp:
            for raw in raws:
                # One recipient per transaction: LMTP answers DATA once per recipient, and
                # smtplib reads only the first answer (the next would be taken for QUIT's).
                for rcpt in rcpts:
                    lmtp.sendmail(mail_from, [rcpt], raw)

    def doveadm(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["doveadm", "-c", str(self.conf), *args], check=False, capture_output=True,
                              text=True, timeout=30)

    def kick(self, user: str = "support@example.test") -> None:
        """Drop every IMAP connection of `user`, as a server restart or a NAT timeout would."""
        result = self.doveadm("kick", user)
        if result.returncode != 0:
            raise RuntimeError(f"doveadm kick failed: {result.stderr.strip()}")

    def stop(self, purge: bool = False) -> None:
        """Kill the instance (by its PID, via the script); purge also deletes its state."""
        args = [str(SERVERS / "stop-dovecot.sh"), str(self.state_dir), "--fast"]
        subprocess.run(args + (["--purge"] if purge else []), check=False, capture_output=True, timeout=30)
        self.pid = 0

    def start(self) -> None:
        """(Re)start on the same state dir and ports; the mailboxes survive a stop()."""
        env = {**os.environ, **self._env, "IMAPS_PORT": str(self.imaps_port),
               "LMTP_PORT": str(self.lmtp_port),
               "DOVECOT_USERS": " ".join(f"{u}:{p}" for u, p in self.users.items())}
        result = subprocess.run([str(SERVERS / "start-dovecot.sh"), str(self.state_dir),
                                 str(self.imap_port)], check=False, capture_output=True, text=True, env=env,
                                timeout=60)
        if result.returncode != 0 or "DOVECOT READY" not in result.stdout:
            raise ServerUnavailable(f"dovecot did not start: {result.stderr.strip()[-500:]}")
        self.pid = int((self.state_dir / "dovecot.pid").read_text().strip())


def start_dovecot(users: dict[str, str] | None = None, env: dict[str, str] | None = None) -> Dovecot:
    """A fresh Dovecot on free ports with its state in a new /tmp dir (the run user must reach it)."""
    if shutil.which("dovecot") is None and not Path("/usr/sbin/dovecot").exists():
        raise ServerUnavailable(not_installed("Dovecot"))
    state = Path(tempfile.mkdtemp(prefix="dovecot-", dir="/tmp"))
    imap, imaps, lmtp = free_ports(3)
    server = Dovecot(state, imap, imaps, lmtp, dict(users or DEFAULT_USERS), _env=dict(env or {}))
    try:
        server.start()
    except ServerUnavailable:
        shutil.rmtree(state, ignore_errors=True)
        raise
    return server


@dataclass
class Postfix:
    """A running private Postfix that accepts mail for the test domains and delivers it to Dovecot."""

    state_dir: Path
    smtp_port: int
    pid: int
    host: str = HOST

    def send(self, raw: bytes, to: str | Sequence[str] = "support@example.test",
             mail_from: str = "customer@example.org") -> None:
        with smtplib.SMTP(self.host, self.smtp_port, timeout=30) as smtp:
            smtp.sendmail(mail_from, [to] if isinstance(to, str) else list(to), raw)

    def stop(self) -> None:
        """Stop the master (by its PID, via the script) and delete the state."""
        subprocess.run([str(SERVERS / "stop-postfix.sh"), str(self.state_dir), "--purge"], check=False,
                       capture_output=True, timeout=30)


def start_postfix(target: Dovecot | int, domains: str = "example.test example.org") -> Postfix:
    """Postfix on a free port delivering over LMTP into `target`: a Dovecot, or the port of any
    LMTP server on loopback (needs root)."""
    lmtp_port = target if isinstance(target, int) else target.lmtp_port
    if shutil.which("postfix") is None and not Path("/usr/sbin/postfix").exists():
        raise ServerUnavailable(not_installed("Postfix"))
    if os.geteuid() != 0:
        raise ServerUnavailable(POSTFIX_NEEDS_ROOT)
    state = Path(tempfile.mkdtemp(prefix="postfix-", dir="/tmp"))
    (port,) = free_ports(1)
    result = subprocess.run([str(SERVERS / "start-postfix.sh"), str(state), str(port),
                             str(lmtp_port), domains], check=False, capture_output=True, text=True,
                            timeout=60)
    if result.returncode != 0 or "POSTFIX READY" not in result.stdout:
        shutil.rmtree(state, ignore_errors=True)
        raise ServerUnavailable(f"postfix did not start: {result.stderr.strip()[-500:]}")
    return Postfix(state, port, int((state / "postfix.pid").read_text().strip()))


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    """A fresh Dovecot per test (about 0.2 s); users support@ and other@example.test, password 'secret'."""
    server = started(start_dovecot)
    try:
        yield server
    finally:
        server.stop(purge=True)


@pytest.fixture
def postfix(dovecot: Dovecot) -> Iterator[Postfix]:
    """Postfix on loopback delivering to the test's `dovecot`; skipped unless the tests run as root."""
    server = started(lambda: start_postfix(dovecot))
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def dovecot_and_postfix(users: dict[str, str]) -> Iterator[tuple[Dovecot, Postfix]]:
    """Dovecot with these users, and Postfix delivering into it: for a test's own fixture."""
    dovecot = started(lambda: start_dovecot(users=users))
    try:
        postfix = started(lambda: start_postfix(dovecot))
        try:
            yield dovecot, postfix
        finally:
            postfix.stop()
    finally:
        dovecot.stop(purge=True)


def started(start: Callable[[], T]) -> T:
    """`start()`'s server; a server that is missing or does not start skips the test (fails it in CI)."""
    try:
        return start()
    except ServerUnavailable as e:
        need_server(str(e))
        raise  # need_server always raises (skip, or fail in CI)
