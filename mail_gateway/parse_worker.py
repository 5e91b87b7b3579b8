"""The parsing process's side (started by mail_gateway.parse_process): mails in, results out.

A batch is a 4-byte big-endian length and a pickle of (count, max_attachment_bytes), then `count`
mails, each a 4-byte length and the mail's bytes as they are. The answer is `count` results, each a
4-byte length and a pickle of a ParsedMail or an exception. Mails are read, parsed and answered one
at a time, and a mail's bytes are let go before its result is pickled: the process holds one mail
and one result at a time, never a whole batch. It imports only the parser, so it stays small; it
ends when stdin closes.
"""

from __future__ import annotations

import pickle
import struct
import sys
from typing import BinaryIO, cast

from core.errors import UserError
from mail_gateway.parsing import ParsedMail, parse_mail

HEADER = struct.Struct(">I")


def parse_one(raw: bytes, max_attachment_bytes: int) -> ParsedMail | Exception:
    try:
        return parse_mail(raw, max_attachment_bytes=max_attachment_bytes)
    except Exception as e:  # parse_mail is built not to raise; if it does, that mail says why
        return UserError(f"{type(e).__name__}: {str(e)[:300]}")


def read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)  # one buffer of `size` bytes: the mail is not copied again
    return data if len(data) == size else None


def read_frame(stream: BinaryIO) -> bytes | None:
    header = read_exactly(stream, HEADER.size)
    return None if header is None else read_exactly(stream, HEADER.unpack(header)[0])


def write_frame(stream: BinaryIO, data: bytes) -> None:
    stream.write(HEADER.pack(len(data)))
    stream.write(data)  # apart from the header: joining them would copy a large result


def main() -> None:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while (request := read_frame(stdin)) is not None:
        count, max_attachment_bytes = cast(tuple[int, int], pickle.loads(request))
        for _ in range(count):
            raw = read_frame(stdin)
            if raw is None:
                return
            result = parse_one(raw, max_attachment_bytes)
            del raw
            data = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
            del result
            write_frame(stdout, data)
            del data
            stdout.flush()


if __name__ == "__main__":
    main()
