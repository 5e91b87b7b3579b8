"""The parsing process's side (started by mail_gateway.parse_process): batches in, results out.

Each message on stdin and stdout is a 4-byte big-endian length and a pickle. It imports only the
parser, so it stays small; it ends when stdin closes.
"""

from __future__ import annotations

import pickle
import struct
import sys
from typing import BinaryIO, cast

from core.errors import UserError
from mail_gateway.parsing import ParsedMail, parse_mail

HEADER = struct.Struct(">I")


def parse_batch(raws: list[bytes], max_attachment_bytes: int) -> list[ParsedMail | Exception]:
    results: list[ParsedMail | Exception] = []
    for raw in raws:
        try:
            results.append(parse_mail(raw, max_attachment_bytes=max_attachment_bytes))
        except Exception as e:  # parse_mail is built not to raise; if it does, that mail says why
            results.append(UserError(f"{type(e).__name__}: {str(e)[:300]}"))
    return results


def read_message(stream: BinaryIO) -> object | None:
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    return pickle.loads(stream.read(size))


def write_message(stream: BinaryIO, message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(HEADER.pack(len(data)) + data)
    stream.flush()


def main() -> None:
    while (request := read_message(sys.stdin.buffer)) is not None:
        raws, max_attachment_bytes = cast(tuple[list[bytes], int], request)
        write_message(sys.stdout.buffer, parse_batch(raws, max_attachment_bytes))


if __name__ == "__main__":
    main()
