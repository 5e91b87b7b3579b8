"""`supportbot ingest` and `supportbot mail quarantine …`: exit codes and the lines an operator reads."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from supportbot.cli import main
from tests.mail.pipeline_support import FIXTURES, SECRET

REPO = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, extra: str = "", *, database_url: str = "", secret: bool = True) -> Path:
    path = tmp_path / "supportbot.toml"
    path.write_text(
        'log_level = "warning"\n'
        f'[desk]\ndata_dir = "data"\ndatabase_url = "{database_url}"\n'
        f'[mail]\nsupport_addresses = ["support@example.test", "billing@example.test"]\n'
        + (f'secret = "{SECRET.decode()}"\n' if secret else "") + f'{extra}'
        'category_by_address = { "billing@example.test" = "billing" }\n'
        '[[mail.keyword_rules]]\nwords = ["refund"]\ncategory = "billing"\npriority = "medium"\n'
        '[[mail.keyword_rules]]\nwords = ["outage", "down"]\ncategory = "technical"\npriority = "high"\n')
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def sql(tmp_path: Path, statement: str) -> None:
    with sqlite3.connect(tmp_path / "data" / "desk.db") as conn:
        conn.execute(statement)


def test_ingest_prints_one_line_per_mail_and_exits_0(tmp_path, capsys):
    config = write_config(tmp_path)
    code, lines, _ = run_cli(capsys, "--config", config, "ingest", FIXTURES / "pipeline_new_request.eml",
                             FIXTURES / "pipeline_gmail_token_reply.eml", FIXTURES / "pipeline_vacation.eml")
    assert code == 0
    assert lines == [
        f"{FIXTURES / 'pipeline_new_request.eml'}: mail 1: opened ticket #1000: keyword 'refund'",
        (f"{FIXTURES / 'pipeline_gmail_token_reply.eml'}: mail 2: added to ticket #1000: "
         "matched by signed token (message id)"),
        (f"{FIXTURES / 'pipeline_vacation.eml'}: mail 3: added to ticket #1000 as machine mail "
         "(no automatic answer): matched by signed token (message id); Auto-Submitted: auto-replied"),
    ]


def test_ingest_reads_one_mail_from_standard_input(tmp_path):
    config = write_config(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "supportbot", "--config", str(config), "ingest",
         "--envelope-from", "alice@customer.test", "--envelope-to", "billing@example.test"],
        input=(FIXTURES / "pipeline_outage.eml").read_bytes(), capture_output=True, cwd=REPO, timeout=60, check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().splitlines() == [
        "stdin: mail 1: opened ticket #1000: address billing@example.test -> billing; keyword 'outage'"]


def test_ingest_of_a_duplicate_says_so_and_exits_0(tmp_path, capsys):
    config = write_config(tmp_path)
    mail = FIXTURES / "pipeline_new_request.eml"
    code, lines, _ = run_cli(capsys, "--config", config, "ingest", mail, mail)
    assert code == 0
    assert lines[1] == f"{mail}: mail 2: duplicate (ticket #1000): duplicate of 1"


def test_quarantined_mail_is_stored_so_ingest_exits_0(tmp_path, capsys):
    config = write_config(tmp_path)
    code, lines, _ = run_cli(capsys, "--config", config, "ingest", FIXTURES / "pipeline_no_sender.eml")
    assert code == 0
    assert "mail 1: quarantined: UserError: the mail has no usable sender address" in lines[0]


def test_a_parse_past_its_budget_is_quarantined_and_ingest_exits_at_once(tmp_path, capsys, monkeypatch):
    # A parse cannot be stopped; ingest must not wait for it either, or the MTA's pipe hangs.
    import mail_gateway.parsing

    def stuck(raw: bytes, **limits: object) -> object:
        time.sleep(4)
        raise AssertionError("never reached in time")

    monkeypatch.setattr(mail_gateway.parsing, "parse_mail", stuck)
    config = write_config(tmp_path, "processing_timeout_seconds = 0.3\n")
    started = time.monotonic()
    code, lines, _ = run_cli(capsys, "--config", config, "ingest", FIXTURES / "pipeline_new_request.eml")
    assert time.monotonic() - started < 3
    assert code == 0 and "mail 1: quarantined: UserError: parsing took longer than 0.3 s" in lines[0]


def test_ingest_exits_75_when_the_database_is_unreachable(tmp_path, capsys):
    config = write_config(tmp_path, database_url="postgresql+asyncpg://u:p@127.0.0.1:9/none")
    code, lines, err = run_cli(capsys, "--config", config, "ingest", FIXTURES / "pipeline_new_request.eml")
    assert code == 75
    assert lines == [] and "nothing stored" in err


def test_ingest_exits_75_when_the_signing_key_cannot_be_read(tmp_path, capsys):
    config = write_config(tmp_path, secret=False)
    (tmp_path / "data" / "secret.key").mkdir(parents=True)  # unreadable even for root
    code, lines, err = run_cli(capsys, "--config", config, "ingest", FIXTURES / "pipeline_new_request.eml")
    assert code == 75
    assert lines == [] and "cannot read the signing key" in err and "nothing stored" in err


def test_ingest_exits_75_when_one_mail_cannot_be_stored(tmp_path, capsys):
    config = write_config(tmp_path)
    assert run_cli(capsys, "--config", config, "migrate")[0] == 0
    sql(tmp_path, "CREATE TRIGGER refuse BEFORE INSERT ON inbound_mail BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    code, lines, _ = run_cli(capsys, "--config", config, "ingest", FIXTURES / "pipeline_new_request.eml")
    assert code == 75
    assert "NOT stored" in lines[0] and "disk full" in lines[0] and lines[0].endswith("try again")


def test_ingest_of_a_missing_file_exits_66_and_stores_nothing(tmp_path, capsys):
    config = write_config(tmp_path)
    code, lines, err = run_cli(capsys, "--config", config, "ingest", tmp_path / "nope.eml")
    assert code == 66 and "cannot read" in err and lines == []


def test_quarantine_list_show_and_retry_after_the_cause_is_fixed(tmp_path, capsys):
    config = write_config(tmp_path)
    assert run_cli(capsys, "--config", config, "migrate")[0] == 0
    # A real failure inside the ticket service: inserting tickets aborts.
    sql(tmp_path, "CREATE TRIGGER refuse BEFORE INSERT ON tickets BEGIN SELECT RAISE(ABORT, 'tickets locked'); END")
    code, lines, _ = run_cli(capsys, "--config", config, "ingest", FIXTURES / "pipeline_new_request.eml",
                             "--envelope-from", "alice@customer.test")
    assert code == 0 and "mail 1: quarantined" in lines[0] and "tickets locked" in lines[0]

    code, lines, _ = run_cli(capsys, "--config", config, "mail", "quarantine", "list")
    assert code == 0 and len(lines) == 1
    assert lines[0].split()[0] == "1" and "Refund for order 42" in lines[0] and "tickets locked" in lines[0]

    code, lines, _ = run_cli(capsys, "--config", config, "mail", "quarantine", "show", "1")
    assert code == 0
    assert lines[0].startswith("mail 1 · quarantined · pipe")
    assert any(line.startswith("reason: ") and "tickets locked" in line for line in lines)
    assert "envelope from: alice@customer.test" in lines
    assert "Subject: Refund for order 42" in lines and "I was charged twice for order 42. Could I get a " \
        "refund for the second charge?" in lines

    code, lines, _ = run_cli(capsys, "--config", config, "mail", "quarantine", "retry", "1")
    assert code == 1 and "quarantined" in lines[0]  # not fixed yet: still quarantined, and it says so

    sql(tmp_path, "DROP TRIGGER refuse")
    code, lines, _ = run_cli(capsys, "--config", config, "mail", "quarantine", "retry", "--all")
    assert code == 0 and lines == ["mail 1: opened ticket #1000: keyword 'refund'"]
    code, lines, _ = run_cli(capsys, "--config", config, "mail", "quarantine", "list")
    assert lines == ["no quarantined mail"]


def test_retry_releases_held_mail_once_the_limit_allows(tmp_path, capsys):
    strict = write_config(tmp_path, "new_tickets_per_sender = 1\n")
    second = tmp_path / "second.eml"
    second.write_bytes(b"From: alice@customer.test\r\nTo: support@example.test\r\nSubject: Another thing\r\n"
                       b"Message-ID: <req-2@customer.test>\r\n\r\nA new question.\r\n")
    code, lines, _ = run_cli(capsys, "--config", strict, "ingest", FIXTURES / "pipeline_new_request.eml", second)
    assert code == 0 and "opened ticket #1000" in lines[0]
    assert lines[1].endswith("mail 2: held: rate-limit: sender opened 1 tickets in the last 10 minutes (limit 1)")

    relaxed = write_config(tmp_path, "new_tickets_per_sender = 5\n")
    code, lines, _ = run_cli(capsys, "--config", relaxed, "mail", "quarantine", "retry", "2")
    assert code == 0 and lines == ["mail 2: opened ticket #1001"]


def test_held_mail_is_listed_and_an_operator_can_release_it(tmp_path, capsys):
    # Oversize mail stays oversize: only an operator's --release lets it through.
    config = write_config(tmp_path)
    config.write_text(config.read_text() + "[mail.smtp_listener]\nmax_message_bytes = 1024\n")
    big = tmp_path / "big.eml"
    big.write_bytes(b"From: carol@customer.test\r\nTo: support@example.test\r\nSubject: Logs attached\r\n"
                    b"Message-ID: <big-1@customer.test>\r\n\r\n" + b"log line\r\n" * 200)
    code, lines, _ = run_cli(capsys, "--config", config, "ingest", big)
    assert code == 0 and "mail 1: held: oversize" in lines[0]

    code, lines, _ = run_cli(capsys, "--config", config, "mail", "quarantine", "list")
    assert lines == ["no quarantined mail"]
    code, lines, _ = run_cli(capsys, "--config", config, "mail", "quarantine", "list", "--held")
    assert code == 0 and len(lines) == 1 and lines[0].split()[0] == "1"
    assert "Logs attached" in lines[0] and "oversize" in lines[0]

    code, lines, _ = run_cli(capsys, "--config", config, "mail", "quarantine", "retry", "--all", "--held")
    assert code == 0 and "mail 1: held: oversize" in lines[0]  # the rule still holds it
    code, _, err = run_cli(capsys, "--config", config, "mail", "quarantine", "retry", "--all", "--held", "--release")
    assert code == 1 and "--release lets one held mail through: name its id" in err
    code, lines, _ = run_cli(capsys, "--config", config, "mail", "quarantine", "retry", "1", "--release")
    assert code == 0 and lines == ["mail 1: opened ticket #1000"]
    code, lines, _ = run_cli(capsys, "--config", config, "mail", "quarantine", "list", "--held")
    assert lines == ["no held mail"]


def test_retry_of_an_unknown_or_settled_mail_is_a_clear_error(tmp_path, capsys):
    config = write_config(tmp_path)
    run_cli(capsys, "--config", config, "ingest", FIXTURES / "pipeline_new_request.eml")
    code, _, err = run_cli(capsys, "--config", config, "mail", "quarantine", "retry", "1")
    assert code == 1 and "mail 1 is processed, not quarantined or held" in err
    code, _, err = run_cli(capsys, "--config", config, "mail", "quarantine", "show", "99")
    assert code == 1 and "no stored mail 99" in err


def test_machine_mail_answering_no_ticket_is_listed_and_shown_not_made_a_ticket(tmp_path, capsys):
    config = write_config(tmp_path)
    code, lines, _ = run_cli(capsys, "--config", config, "ingest", FIXTURES / "vacation_autoreply.eml")
    assert code == 0 and "held" in lines[0] and "machine-mail" in lines[0]
    code, lines, _ = run_cli(capsys, "--config", config, "mail", "machine", "list")
    assert code == 0 and len(lines) == 1 and "machine-mail: matches no ticket (auto-submitted" in lines[0]
    mail_id = lines[0].split()[0]
    code, lines, _ = run_cli(capsys, "--config", config, "mail", "machine", "show", mail_id)
    assert code == 0 and lines[0].startswith(f"mail {mail_id} · held")
    code, lines, _ = run_cli(capsys, "--config", config, "tickets", "list")
    assert code == 0 and not any("Out of office" in line for line in lines)
