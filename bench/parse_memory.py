"""Parsing memory: peak RSS and time of the real parse process on large mails of pathological shapes.

    python -m bench.parse_memory                          # every shape, 30 MiB, this checkout
    python -m bench.parse_memory --code /tmp/parse-before # the same against another checkout
    python -m bench.parse_memory --shapes text-3-byte-lines,html-tags --size-mib 10

Each case runs in a fresh interpreter (so every peak is its own): it builds the mail(s), starts a
`mail_gateway.parse_process.ParseProcess` (the process `supportbot run` parses in), warms it up
with a small mail, then hands it the case as the inbound worker would: one mail (`alone`), or three
mails of the shape in one `parse_many` call (`three`, what a backlog of three big mails is). It
prints the parse process's peak RSS above its warmed-up RSS (VmHWM - VmRSS from /proc), the same
for the calling process, and the wall time. `--code` runs another checkout's parse process and
parser (for before/after: `git worktree add --detach /tmp/parse-before <commit>`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

MIB = 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent

_HEAD = b"From: Alice <alice@customer.example>\nTo: support@example.org\nSubject: big\n"


def _three_byte_lines(size: int) -> bytes:
    return b"ab\n" * (size // 3)


def _text_lines(size: int) -> bytes:
    return b"Content-Type: text/plain; charset=utf-8\n\n" + _three_byte_lines(size)


def _crlf_lines(size: int) -> bytes:
    return b"Content-Type: text/plain\r\n\r\n" + b"a\r\n" * (size // 3)


def _flowed_lines(size: int) -> bytes:
    # Every line flowed into the next: one 20 MB paragraph.
    return b"Content-Type: text/plain; format=flowed; delsp=yes\n\n" + b"a \n" * (size // 3)


def _quoted_reply(size: int) -> bytes:
    return b"Content-Type: text/plain\n\nThanks!\n\nOn Mon, 1 Jan 2024, Bob wrote:\n" + b"> a\n" * (size // 4)


def _base64_lines(size: int) -> bytes:
    line = base64.b64encode(b"ab\n") + b"\n"  # the 3-byte lines, 4 characters a line
    return b"Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n" + line * (size // len(line))


def _qp_soft_breaks(size: int) -> bytes:
    return b"Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n" + b"a=\n" * (size // 3)


def _html_br_lines(size: int) -> bytes:
    return b"Content-Type: text/html\n\n" + b"a<br>\n" * (size // 6)


def _html_tags(size: int) -> bytes:
    return b"Content-Type: text/html\n\n" + b"<p>a\n" * (size // 5)


def _header_lines(size: int) -> bytes:
    return b"X-A: b\n" * (size // 7) + b"\nbody\n"


def _nested_text(size: int) -> bytes:
    return (b"Content-Type: multipart/mixed; boundary=a\n\n--a\nContent-Type: multipart/alternative; boundary=b\n\n"
            b"--b\nContent-Type: text/plain\n\n" + _three_byte_lines(size) + b"\n--b--\n--a--\n")


def _nested_forwarded(size: int) -> bytes:
    inner = b"From: bob@example.net\nSubject: fwd\nContent-Type: text/plain\n\n" + _three_byte_lines(size)
    return (b"Content-Type: multipart/mixed; boundary=a\n\n--a\nContent-Type: text/plain\n\nsee below\n"
            b"--a\nContent-Type: message/rfc822\n\n" + inner + b"\n--a--\n")


def _attachment(size: int) -> bytes:
    data = base64.encodebytes(b"\x00\x01\x02" * (size * 3 // 12))
    return (b"Content-Type: multipart/mixed; boundary=a\n\n--a\nContent-Type: text/plain\n\nsee attached\n"
            b"--a\nContent-Type: application/pdf; name=a.pdf\nContent-Transfer-Encoding: base64\n\n"
            + data + b"--a--\n")


SHAPES: dict[str, Callable[[int], bytes]] = {
    "text-3-byte-lines": _text_lines,
    "crlf-lines": _crlf_lines,
    "flowed-lines": _flowed_lines,
    "quoted-reply": _quoted_reply,
    "base64-4-char-lines": _base64_lines,
    "qp-soft-breaks": _qp_soft_breaks,
    "html-br-lines": _html_br_lines,
    "html-tags": _html_tags,
    "header-lines": _header_lines,
    "nested-text": _nested_text,
    "nested-forwarded": _nested_forwarded,
    "attachment": _attachment,
}


def build(shape: str, size: int, n: int = 0) -> bytes:
    """A mail of about `size` bytes of the shape; `n` makes its Message-ID differ."""
    return _HEAD + b"Message-ID: <big-%d@customer.example>\n" % n + SHAPES[shape](size)


def _status_mib(key: str, pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _measure(shape: str, size: int, count: int, timeout: float) -> dict[str, object]:
    from mail_gateway.parse_process import ParseProcess

    raws = [build(shape, size, n) for n in range(count)]
    parser = ParseProcess(max_attachment_bytes=25 * MIB, timeout_seconds=timeout)
    try:
        await parser.parse_many([build("text-3-byte-lines", 1000)])  # up, imported, warmed
        worker = parser.pid
        assert worker is not None
        worker_base = _status_mib("VmRSS", worker)
        self_base = _status_mib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # this process's peak starts here
        started = time.perf_counter()
        results = await parser.parse_many(raws)
        seconds = time.perf_counter() - started
        worker_peak = _status_mib("VmHWM", worker) if parser.pid == worker else float("nan")
        self_peak = _status_mib("VmHWM")
    finally:
        await parser.stop()
    errors = [str(r) for r in results if isinstance(r, Exception)]
    return {
        "shape": shape, "mib": round(len(raws[0]) / MIB, 1), "count": count, "seconds": seconds,
        "worker_growth": worker_peak - worker_base, "caller_growth": self_peak - self_base,
        "errors": errors, "text_mib": [round(len(getattr(r, "text", "")) / MIB, 1) for r in results],
    }


def _child(args: argparse.Namespace) -> None:
    code = Path(args.code).resolve()
    os.chdir(code)  # the parse process runs `python -m mail_gateway.parse_worker` from here
    os.environ["PYTHONPATH"] = str(code)
    sys.path.insert(0, str(code))
    result = asyncio.run(_measure(args.child, int(args.size_mib * MIB), args.count, args.timeout))
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", default=str(ROOT), help="checkout whose parser runs (default: this one)")
    parser.add_argument("--size-mib", type=float, default=30.0)
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated; default all")
    parser.add_argument("--counts", default="1,3", help="mails per case: 1 = alone, 3 = three at once")
    parser.add_argument("--timeout", type=float, default=60.0, help="parse budget (supportbot's default is 30 s)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return

    from bench._util import print_table

    rows = []
    for shape in args.shapes.split(","):
        for count in (int(c) for c in args.counts.split(",")):
            command = [sys.executable, "-m", "bench.parse_memory", "--child", shape, "--count", str(count),
                       "--code", args.code, "--size-mib", str(args.size_mib), "--timeout", str(args.timeout)]
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(done.stderr[-2000:], file=sys.stderr)
                rows.append([shape, "", "alone" if count == 1 else f"{count} at once", "failed", "", "", "", ""])
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            errors = r["errors"]
            rows.append([
                shape, r["mib"], "alone" if count == 1 else f"{count} at once",
                round(r["worker_growth"], 1), f"{r['worker_growth'] / r['mib']:.1f}x",
                round(r["caller_growth"], 1), round(r["seconds"], 2),
                f"{len(errors)} failed: {errors[0][:60]}" if errors else "ok",
            ])
    print_table(["shape", "MiB each", "mails", "parse process peak MiB", "per MiB of mail",
                 "caller peak MiB", "seconds", "result"], rows,
                title=f"Parsing memory ({args.code}, Python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
