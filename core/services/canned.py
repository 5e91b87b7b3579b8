"""Canned responses (snippets): stored texts with {variables}, filled in for a ticket."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping

from sqlalchemy import select

from core.desk import Desk
from core.errors import Conflict, NotFound, UserError
from core.models import AuditEntry, CannedResponse
from core.services._common import StaffRef, ensure_staff

_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,99}$")
MAX_BODY = 4000  # a Discord modal's text input holds no more


async def save_snippet(desk: Desk, name: str, body: str, actor: StaffRef, *, create: bool) -> CannedResponse:
    """Create (create=True) or edit (create=False) a snippet."""
    name = _check_name(name)
    body = body.strip()
    if not body or len(body) > MAX_BODY:
        raise UserError(f"a snippet needs between 1 and {MAX_BODY} characters")
    _check_template(body)
    now = desk.clock()
    async with desk.db.transaction() as session:
        staff = await ensure_staff(session, actor, now)
        snippet = await session.scalar(select(CannedResponse).where(CannedResponse.name == name))
        if create and snippet is not None:
            raise Conflict(f"a snippet named {name!r} exists already")
        if not create and snippet is None:
            raise NotFound(f"no snippet named {name!r}")
        if snippet is None:
            snippet = CannedResponse(name=name, body=body, created_by_id=staff.id, updated_at=now)
            session.add(snippet)
        else:
            snippet.body, snippet.updated_at = body, now
        session.add(AuditEntry(staff_id=staff.id, action="SnippetSaved", details={"name": name}, created_at=now))
        return snippet


async def remove_snippet(desk: Desk, name: str, actor: StaffRef) -> None:
    now = desk.clock()
    async with desk.db.transaction() as session:
        staff = await ensure_staff(session, actor, now)
        snippet = await session.scalar(select(CannedResponse).where(CannedResponse.name == _check_name(name)))
        if snippet is None:
            raise NotFound(f"no snippet named {name!r}")
        await session.delete(snippet)
        session.add(AuditEntry(staff_id=staff.id, action="SnippetRemoved", details={"name": name}, created_at=now))


async def list_snippets(desk: Desk) -> list[CannedResponse]:
    async with desk.db.read() as session:
        return list(await session.scalars(select(CannedResponse).order_by(CannedResponse.name)))


async def get_snippet(desk: Desk, name: str) -> CannedResponse:
    async with desk.db.read() as session:
        snippet = await session.scalar(select(CannedResponse).where(CannedResponse.name == name.strip().lower()))
    if snippet is None:
        raise NotFound(f"no snippet named {name!r}")
    return snippet


def render_snippet(body: str, variables: Mapping[str, str]) -> str:
    """Fill {customer_name}, {ticket} …; unknown variables stay as written rather than failing."""
    return string.Formatter().vformat(body, (), _Lenient(variables))


class _Lenient(dict[str, str]):
    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__(values)

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _check_name(name: str) -> str:
    name = name.strip().lower()
    if not _NAME.match(name):
        raise UserError("a snippet name is 1-100 letters, digits, '-' or '_'")
    return name


def _check_template(body: str) -> None:
    try:
        for _, field, spec, conv in string.Formatter().parse(body):
            if field is not None and (not field.isidentifier() or spec or conv):
                raise UserError(f"snippet variables look like {{customer_name}}; {field!r} is not one")
    except ValueError as e:  # unbalanced braces
        raise UserError(f"snippet text has unbalanced braces: {e}") from None
