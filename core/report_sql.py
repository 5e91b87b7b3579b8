"""SQL building blocks for reports that behave the same on SQLite and PostgreSQL: buckets, durations, percentiles."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Float,
    Integer,
    Select,
    SQLColumnExpression,
    case,
    cast,
    extract,
    func,
    literal,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement


@dataclass(frozen=True)
class DurationStats:
    """How long something took, in seconds, over `count` tickets (None when there were none)."""

    count: int
    median_seconds: float | None
    p90_seconds: float | None


def bucket(column: SQLColumnExpression[datetime], bounds: Sequence[datetime]) -> ColumnElement[int]:
    """Index i of the interval [bounds[i], bounds[i+1]) a timestamp falls in; len(bounds)-1 past the last.

    Local days and hours are cut in Python (zoneinfo knows DST) and handed over as UTC bounds,
    so neither engine has to know the time zone and a 23- or 25-hour day needs nothing special.
    Rows before bounds[0] must be filtered out by the caller.
    """
    whens = [(column < bound, index) for index, bound in enumerate(bounds[1:])]
    return case(*whens, else_=len(bounds) - 1)


def seconds_between(dialect: str, later: SQLColumnExpression[datetime],
                    earlier: SQLColumnExpression[datetime]) -> ColumnElement[float]:
    """`later - earlier` in seconds. Both columns hold naive UTC, so plain arithmetic is right."""
    if dialect == "postgresql":
        return cast(extract("epoch", later - earlier), Float)
    return (func.julianday(later) - func.julianday(earlier)) * literal(86400.0)


async def duration_stats(session: AsyncSession, durations: Select[Any]) -> DurationStats:
    """Median and 90th percentile (linear interpolation, as percentile_cont) of a one-column select."""
    values = durations.subquery()
    x = values.c[0]
    if session.get_bind().dialect.name == "postgresql":
        row = (await session.execute(select(
            func.count(x),
            func.percentile_cont(0.5).within_group(x),
            func.percentile_cont(0.9).within_group(x),
        ))).one()
        return _stats(row[0], row[1], row[2])
    # SQLite has no percentile_cont: number the sorted values with a window function and
    # interpolate between the two rows around position p·(n-1), all inside the database.
    ranked = select(
        x.label("x"),
        (func.row_number().over(order_by=x) - 1).label("i"),
        func.count().over().label("n"),
    ).subquery()
    n = func.max(ranked.c.n)
    row = (await session.execute(select(
        func.coalesce(n, 0), _interpolated(ranked, 0.5), _interpolated(ranked, 0.9)))).one()
    return _stats(row[0], row[1], row[2])


def _interpolated(ranked: object, p: float) -> ColumnElement[float]:
    c = ranked.c  # type: ignore[attr-defined]
    pos = literal(p) * (c.n - 1)
    lower = cast(pos, Integer)  # positions are never negative, so truncation is floor
    frac = pos - lower
    return (func.sum(case((c.i == lower, c.x * (1 - frac)), else_=0.0))
            + func.sum(case(((c.i == lower + 1) & (frac > 0), c.x * frac), else_=0.0)))


def _stats(count: int | None, median: float | None, p90: float | None) -> DurationStats:
    count = int(count or 0)
    if count == 0:
        return DurationStats(0, None, None)
    return DurationStats(count, round(float(median or 0), 1), round(float(p90 or 0), 1))
