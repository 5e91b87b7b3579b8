"""Dangerous attachments: executables, scripts, macro documents and what a virus scanner reports.

A dangerous attachment is kept on the desk (its bytes and its row, flagged) but never uploaded to
Discord nor attached to mail we send. The verdict is made once, when the attachment is stored:
by its name's extension (a configurable list), by its first bytes (a renamed .exe still starts
with "MZ"), and, when a scan command is configured, by that command (exit status 1: infected).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from core.attachments import AttachmentStore
from core.db import Database
from core.models import Attachment

log = logging.getLogger(__name__)

# What each default extension is, for the reason staff read ("x.exe: … executable").
KINDS: dict[str, str] = {
    **dict.fromkeys(("exe", "com", "scr", "pif", "dll", "cpl", "sys", "msc", "gadget", "application"),
                    "executable"),
    **dict.fromkeys(("msi", "msp", "mst", "appx", "msix"), "installer"),
    **dict.fromkeys(("bat", "cmd", "js", "jse", "vbs", "vbe", "wsf", "wsh", "ps1", "psm1", "psd1",
                     "reg", "scf", "inf"), "script"),
    "hta": "HTML application",
    "jar": "Java archive",
    "lnk": "shortcut",
    **dict.fromkeys(("iso", "img", "vhd", "vhdx"), "disk image"),
    **dict.fromkeys(("docm", "dotm", "xlsm", "xltm", "xlam", "pptm", "potm", "ppsm", "ppam", "sldm"),
                    "macro-enabled document"),
}
DEFAULT_DANGEROUS_EXTENSIONS: tuple[str, ...] = tuple(KINDS)

REASON_MAX = 255
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_LNK = b"\x4c\x00\x00\x00\x01\x14\x02\x00"
# Names of the streams that hold macros, as an OLE2 directory stores them (UTF-16LE), and the part
# a macro-enabled OOXML file (a zip) carries whatever its name says.
_OLE2_MACRO_MARKERS = tuple(name.encode("utf-16-le") for name in ("_VBA_PROJECT", "VBA", "Macros"))
_OOXML_MACRO_MARKER = b"vbaProject.bin"


@dataclass(frozen=True)
class AttachmentPolicy:
    """What makes an attachment dangerous (supportbot.config fills it from [mail])."""

    dangerous_extensions: tuple[str, ...] = DEFAULT_DANGEROUS_EXTENSIONS
    # A command run on the stored file, "{path}" replaced by its path, e.g.
    # "clamdscan --no-summary --fdpass {path}": exit 0 clean, 1 infected, anything else an error.
    virus_scan_command: str = ""
    virus_scan_timeout_seconds: float = 60.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "dangerous_extensions",
                           tuple(e.strip().lower().lstrip(".") for e in self.dangerous_extensions if e.strip()))


def extension_of(filename: str) -> str:
    # Windows ignores trailing dots and spaces: "invoice.exe. " runs as invoice.exe.
    name = filename.strip().rstrip(". ").lower()
    base = name.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]
    return base.rsplit(".", 1)[1] if "." in base else ""


def classify(policy: AttachmentPolicy, filename: str, data: bytes) -> str | None:
    """Why this file is dangerous ("executable", …), or None: by its extension, then its content."""
    ext = extension_of(filename)
    if ext and ext in policy.dangerous_extensions:
        return KINDS.get(ext, f".{ext} file")
    return sniff(data)


def sniff(data: bytes) -> str | None:
    """What the first bytes say the file is, when that is dangerous whatever its name."""
    if data.startswith(b"MZ"):
        return "executable"
    if data.startswith(b"\x7fELF"):
        return "executable"
    if data[:4] in (b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe"):
        return "executable"  # Mach-O
    if data.startswith(_LNK):
        return "shortcut"
    if data.startswith(_OLE2) and any(marker in data for marker in _OLE2_MACRO_MARKERS):
        return "macro-enabled document"
    if data.startswith(b"PK\x03\x04") and _OOXML_MACRO_MARKER in data:
        return "macro-enabled document"
    return None


async def scan(policy: AttachmentPolicy, path: Path, name: str = "") -> str | None:
    """Run the configured scanner on a stored file: None when clean (or no scanner), else the reason.

    The scanner runs as its own process (the event loop goes on), bounded by the timeout. A scan that
    fails or times out counts as dangerous: an unscanned file is not passed on. `name` (the
    attachment's file name) stands for the stored file's path in the scanner's verdict.
    """
    if not policy.virus_scan_command:
        return None
    args = [part.replace("{path}", str(path)) for part in shlex.split(policy.virus_scan_command)]
    if not any("{path}" in part for part in shlex.split(policy.virus_scan_command)):
        args.append(str(path))
    try:
        proc = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except OSError as e:
        log.error("virus scan of %s could not start %r: %s", path.name, args[0], e)
        return f"not scanned: the scanner could not start ({e.strerror or e})"[:REASON_MAX]
    try:
        out, err = await asyncio.wait_for(proc.communicate(), policy.virus_scan_timeout_seconds)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        log.error("virus scan of %s took longer than %ss", path.name, policy.virus_scan_timeout_seconds)
        return f"not scanned: the scanner took longer than {policy.virus_scan_timeout_seconds:g}s"
    if proc.returncode == 0:
        return None
    line = (_last_line(out) or _last_line(err)).replace(str(path), name or path.name)
    if proc.returncode == 1:
        log.warning("virus scan: %s is infected: %s", path.name, line)
        return f"virus scan: {line or 'infected'}"[:REASON_MAX]
    log.error("virus scan of %s failed (exit %s): %s", path.name, proc.returncode, line)
    return f"not scanned: the scanner failed (exit {proc.returncode}) {line}".strip()[:REASON_MAX]


def _last_line(output: bytes) -> str:
    lines = [line.strip() for line in output.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""


async def check(policy: AttachmentPolicy, files: AttachmentStore, filename: str, data: bytes,
                sha256: str) -> str | None:
    """The verdict on one stored attachment: why it is dangerous, or None."""
    reason = classify(policy, filename, data)
    if reason is None:
        reason = await scan(policy, files.path_for(sha256), filename)
    return reason[:REASON_MAX] if reason else None


async def dangerous_reasons(db: Database, attachment_ids: Iterable[int]) -> dict[int, str]:
    """The flagged ones among these attachments, with why (for an edge that shows attachments)."""
    ids = list(attachment_ids)
    if not ids:
        return {}
    async with db.read() as session:
        rows = await session.execute(select(Attachment.id, Attachment.dangerous_reason)
                                     .where(Attachment.id.in_(ids), Attachment.dangerous.is_(True)))
        return {row[0]: row[1] or "dangerous" for row in rows}
