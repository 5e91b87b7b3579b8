"""Dangerous attachments: flagged when stored, by name, by content and by a virus scanner."""

from __future__ import annotations

import io
import sys
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from core.attachment_policy import AttachmentPolicy, classify, dangerous_reasons
from core.attachments import AttachmentStore
from core.desk import CoreSettings, Desk
from core.intake import Kind
from core.models import Attachment
from supportbot.config import Config
from tests.mail.pipeline_support import deliver, make_context

ctx = make_context()

# The EICAR test file: every virus scanner reports it, and it harms nothing.
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
MZ = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + bytes(200)
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"
OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504)


def ooxml(*parts: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for part in parts:
            z.writestr(part, b"<x/>")
    return out.getvalue()


def mail_with(files: list[tuple[str, str, bytes]], *, message_id: str = "files@customer.test") -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@customer.test"
    msg["To"] = "support@example.test"
    msg["Subject"] = "Files for you"
    msg["Message-ID"] = f"<{message_id}>"
    msg.set_content("See the attached files.")
    for name, ctype, data in files:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes()


async def attachments_of(desk: Desk, number: int) -> dict[str, Attachment]:
    from tests.mail.pipeline_support import messages_of
    messages = await messages_of(desk, number)
    async with desk.db.read() as session:
        rows = await session.scalars(select(Attachment).where(Attachment.message_id.in_([m.id for m in messages])))
        return {a.filename: a for a in rows}


async def test_executables_renamed_executables_and_macro_documents_are_flagged_a_pdf_is_not(desk):
    outcome = await deliver(desk, ctx, mail_with([
        ("setup.exe", "application/octet-stream", MZ),
        ("holiday-photos.txt", "text/plain", MZ),  # an .exe under another name
        ("budget.docm", "application/vnd.ms-word.document.macroEnabled.12", ooxml("word/document.xml")),
        ("manual.pdf", "application/pdf", PDF),
        ("logs.zip", "application/zip", ooxml("app.log")),  # archives are not dangerous by default
    ]))
    assert outcome.kind == Kind.OPENED
    found = await attachments_of(desk, outcome.ticket_number)
    flagged = {name: a.dangerous_reason for name, a in found.items() if a.dangerous}
    assert flagged == {"setup.exe": "executable", "holiday-photos.txt": "executable",
                       "budget.docm": "macro-enabled document"}
    assert not found["manual.pdf"].dangerous and found["manual.pdf"].dangerous_reason is None
    # Kept on the desk all the same: staff can still fetch them.
    assert await desk.files.get(found["setup.exe"].sha256 or "") == MZ
    ids = {a.id: name for name, a in found.items()}
    assert {ids[i]: why for i, why in (await dangerous_reasons(desk.db, ids)).items()} == flagged


@pytest.mark.parametrize(("name", "data", "reason"), [
    ("report.doc", OLE2 + "_VBA_PROJECT".encode("utf-16-le"), "macro-enabled document"),
    ("report.doc", OLE2 + "WordDocument".encode("utf-16-le"), None),  # a plain old .doc
    ("report.docx", ooxml("word/document.xml", "word/vbaProject.bin"), "macro-enabled document"),  # renamed .docm
    ("report.docx", ooxml("word/document.xml"), None),
    ("run.PS1", b"Write-Host hi", "script"),
    ("invoice.pdf.exe. ", PDF, "executable"),  # Windows drops trailing dots and spaces
    ("a.lnk", b"", "shortcut"),
    ("disk.iso", b"", "disk image"),
    ("tool", b"\x7fELF\x02\x01\x01", "executable"),
    ("notes.txt", b"MZ is a fine pair of letters", "executable"),  # the content decides, not intent
    ("notes.txt", b"just text", None),
    ("backup.7z", b"7z\xbc\xaf\x27\x1c", None),
])
def test_classify_by_extension_and_by_first_bytes(name, data, reason):
    assert classify(AttachmentPolicy(), name, data) == reason


def test_the_list_of_extensions_is_configured_under_mail():
    config = Config.model_validate({"mail": {"dangerous_extensions": [".ZIP", "exe"],
                                             "virus_scan_command": "clamdscan --no-summary {path}"}})
    policy = config.core_settings().attachments
    assert policy.dangerous_extensions == ("zip", "exe")
    assert policy.virus_scan_command == "clamdscan --no-summary {path}"
    assert classify(policy, "logs.zip", b"PK\x03\x04") == ".zip file"
    assert classify(policy, "run.js", b"alert(1)") is None  # no longer on the list
    assert classify(policy, "renamed.txt", MZ) == "executable"  # the content check stays
    assert Config().core_settings().attachments == AttachmentPolicy()
    with pytest.raises(ValidationError, match="file name extensions"):
        Config.model_validate({"mail": {"dangerous_extensions": ["e x e"]}})
    with pytest.raises(ValidationError, match="a command line"):
        Config.model_validate({"mail": {"virus_scan_command": "clamdscan 'unclosed"}})


SCANNER = """\
import sys
path = sys.argv[1]
data = open(path, "rb").read()
if b"{marker}" in data:
    print(path + ": Eicar-Test-Signature FOUND")
    sys.exit(1)
if b"SLOW" in data:
    import time
    time.sleep(30)
if b"BROKEN" in data:
    print("cannot connect to clamd", file=sys.stderr)
    sys.exit(2)
print(path + ": OK")
"""


def scanner(tmp_path: Path) -> str:
    script = tmp_path / "scanner.py"
    script.write_text(SCANNER.replace("{marker}", "EICAR-STANDARD-ANTIVIRUS-TEST-FILE"))
    return f"{sys.executable} {script} {{path}}"


async def test_a_configured_virus_scanner_flags_an_infected_file_with_its_verdict(desk, tmp_path):
    policy = AttachmentPolicy(virus_scan_command=scanner(tmp_path), virus_scan_timeout_seconds=2)
    scanned = Desk(desk.db, CoreSettings(attachments=policy), AttachmentStore(tmp_path / "files"), desk.clock)
    outcome = await deliver(scanned, ctx, mail_with([
        ("eicar.txt", "text/plain", EICAR),
        ("manual.pdf", "application/pdf", PDF),
        ("slow.txt", "text/plain", b"SLOW"),
        ("broken.txt", "text/plain", b"BROKEN"),
    ]))
    found = await attachments_of(scanned, outcome.ticket_number)
    eicar = found["eicar.txt"]
    assert eicar.dangerous and eicar.dangerous_reason is not None
    assert eicar.dangerous_reason == "virus scan: eicar.txt: Eicar-Test-Signature FOUND"  # the scanner's line
    assert not found["manual.pdf"].dangerous
    # A scan that does not finish, or fails, passes nothing on: the file counts as not scanned.
    assert found["slow.txt"].dangerous_reason == "not scanned: the scanner took longer than 2s"
    assert found["broken.txt"].dangerous_reason == "not scanned: the scanner failed (exit 2) cannot connect to clamd"


async def test_a_scanner_that_cannot_start_flags_rather_than_passes(desk, tmp_path):
    policy = AttachmentPolicy(virus_scan_command=str(tmp_path / "no-such-scanner"))
    scanned = Desk(desk.db, CoreSettings(attachments=policy), AttachmentStore(tmp_path / "files"), desk.clock)
    outcome = await deliver(scanned, ctx, mail_with([("manual.pdf", "application/pdf", PDF)]))
    (pdf,) = (await attachments_of(scanned, outcome.ticket_number)).values()
    assert pdf.dangerous and (pdf.dangerous_reason or "").startswith("not scanned: the scanner could not start")
