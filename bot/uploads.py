"""Files staff attach to a slash command, read into what the core stores."""

from __future__ import annotations

import discord

from core.errors import UserError
from core.services import NewAttachment

MAX_UPLOAD = 25 * 1024 * 1024  # what Discord lets a member upload at most


async def read_attachments(*attachments: discord.Attachment | None) -> list[NewAttachment]:
    files = []
    for a in attachments:
        if a is None:
            continue
        if a.size > MAX_UPLOAD:
            raise UserError(f"{a.filename} is too large to send by mail")
        files.append(NewAttachment(filename=a.filename, content_type=a.content_type or "application/octet-stream",
                                   data=await a.read()))
    return files
