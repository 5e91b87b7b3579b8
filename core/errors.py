"""Errors the core raises on purpose: bad input from a person, as opposed to bugs or outages."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from a customer, staff member or operator: log at info and tell them clearly."""


class NotFound(UserError):
    """The ticket, contact or snippet asked for does not exist."""


class Conflict(UserError):
    """The request contradicts the current state (e.g. claiming a ticket someone else holds)."""


def describe_error(error: BaseException) -> str:
    """`Type: first line of the message`, bounded: database errors carry SQL and parameters after it."""
    text = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
